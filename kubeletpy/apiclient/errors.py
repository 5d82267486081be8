"""Errors of the REST client, one class per condition callers branch on.

The API server answers failures with a `Status` object; we keep its `reason`, `message`
and `details` so callers can tell "someone else wrote first" (409 Conflict, retry with a
fresh read) from "it already exists" (409 AlreadyExists) from "your resourceVersion is
too old" (410 Gone/Expired, re-list).
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, code: int, reason: str, message: str, status: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.status = status or {}

    @staticmethod
    def from_status(code: int, body: Any) -> ApiError:
        status = body if isinstance(body, dict) else {}
        reason = str(status.get("reason") or "")
        message = str(status.get("message") or (body if isinstance(body, str) else ""))
        code = int(status.get("code") or code)
        cls: type[ApiError] = ApiError
        if code == 404:
            cls = NotFoundError
        elif code == 409 and reason == "AlreadyExists":
            cls = AlreadyExistsError
        elif code == 409:
            cls = ConflictError
        elif code == 410:
            cls = GoneError
        return cls(code, reason, message, status)


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    """Optimistic concurrency lost: re-read and try again."""


class AlreadyExistsError(ApiError):
    pass


class GoneError(ApiError):
    """The resourceVersion asked for is compacted away: re-list."""


class TransportError(Exception):
    """The server could not be reached or the connection broke mid-request."""
