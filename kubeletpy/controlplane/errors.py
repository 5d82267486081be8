"""API errors as Kubernetes `Status` objects.

kubectl builds its messages from these fields (see specs/kubectl.md 1.5): `reason` picks
the prefix, 422s are printed from `details.kind`, `details.name` and `details.causes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Cause:
    reason: str   # FieldValueRequired, FieldValueInvalid, FieldValueDuplicate, ...
    field: str    # "spec.containers[0].image"
    message: str  # "Required value", "Invalid value: 70000: must be between 1 and 65535, inclusive"

    def to_json(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}


def required(field: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def invalid(field: str, value: Any, detail: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {_fmt(value)}: {detail}")


def duplicate(field: str, value: Any) -> Cause:
    return Cause("FieldValueDuplicate", field, f"Duplicate value: {_fmt(value)}")


def not_supported(field: str, value: Any, allowed: list[str]) -> Cause:
    return Cause(
        "FieldValueNotSupported", field,
        f"Unsupported value: {_fmt(value)}: supported values: " + ", ".join(f'"{a}"' for a in allowed),
    )


def forbidden(field: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def too_long(field: str, limit: int) -> Cause:
    return Cause("FieldValueTooLong", field, f"Too long: may not be more than {limit} bytes")


def not_found_cause(field: str, value: Any) -> Cause:
    return Cause("FieldValueNotFound", field, f"Not found: {_fmt(value)}")


class APIError(Exception):
    """An error answered to the client as a Status object with HTTP `code`."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        s: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details is not None:
            s["details"] = self.details
        elif self.code == 404:
            # The real server always sends details with a NotFound, and kubectl reads
            # ErrStatus.Details.Name without a nil check (`kubectl debug` panics otherwise).
            s["details"] = {}
        return s


def _details(resource: str, name: str, group: str) -> dict[str, Any]:
    d: dict[str, Any] = {"name": name, "kind": resource}
    if group:
        d["group"] = group
    return d


def _qual(resource: str, group: str) -> str:
    return f"{resource}.{group}" if group else resource


def not_found(resource: str, name: str, group: str = "") -> APIError:
    return APIError(404, "NotFound", f'{_qual(resource, group)} "{name}" not found', _details(resource, name, group))


def not_found_path(message: str) -> APIError:
    """A 404 for a URL the server does not serve (no such resource or subresource). Its details
    are empty, as the real server's: clients tell "not served" from "no such object" (whose
    details carry name and kind, see `not_found`) by the empty name -- `kubectl debug` says
    "ephemeral containers are disabled for this cluster" on such an answer."""
    return APIError(404, "NotFound", message, {})


def already_exists(resource: str, name: str, group: str = "") -> APIError:
    return APIError(409, "AlreadyExists", f'{_qual(resource, group)} "{name}" already exists',
                    _details(resource, name, group))


def conflict(resource: str, name: str, group: str, detail: str) -> APIError:
    return APIError(409, "Conflict", f'Operation cannot be fulfilled on {_qual(resource, group)} "{name}": {detail}',
                    _details(resource, name, group))


def stale(resource: str, name: str, group: str = "") -> APIError:
    return conflict(resource, name, group, "the object has been modified; please apply your changes to the "
                                           "latest version and try again")


def invalid_object(kind: str, name: str, causes: list[Cause], group: str = "") -> APIError:
    what = f"{kind}.{group}" if group else kind
    msg = f'{what} "{name}" is invalid: ' + ", ".join(f"{c.field}: {c.message}" if c.field else c.message
                                                      for c in causes)
    details: dict[str, Any] = {"name": name, "kind": kind, "causes": [c.to_json() for c in causes]}
    if group:
        details["group"] = group
    return APIError(422, "Invalid", msg, details)


def bad_request(message: str, causes: list[Cause] | None = None) -> APIError:
    return APIError(400, "BadRequest", message, {"causes": [c.to_json() for c in causes]} if causes else None)


def forbidden_error(message: str, resource: str = "", name: str = "", group: str = "") -> APIError:
    return APIError(403, "Forbidden", message, _details(resource, name, group) if resource else None)


def unauthorized(message: str = "Unauthorized") -> APIError:
    return APIError(401, "Unauthorized", message)


def expired(message: str) -> APIError:
    return APIError(410, "Expired", message)


def gone(message: str) -> APIError:
    return APIError(410, "Gone", message)


def method_not_allowed(message: str) -> APIError:
    return APIError(405, "MethodNotAllowed", message)


def internal(message: str) -> APIError:
    return APIError(500, "InternalError", f"Internal error occurred: {message}")
