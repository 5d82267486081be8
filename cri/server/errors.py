"""Exceptions → gRPC status codes, the way containerd's CRI plugin maps its errdefs.

The kubelet branches on these codes (NotFound means "already gone", AlreadyExists
carries the id to adopt or remove), so every handler goes through `rpc` and no
exception escapes as UNKNOWN with a Python traceback for a client to parse.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from cri.images import errors as image_errors
from cri.runtime import errors as rt_errors

log = logging.getLogger("kubeletpy.cri")

F = TypeVar("F", bound=Callable[..., Any])


class RPCError(Exception):
    """Raised inside a handler to answer with exactly this code and message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def invalid(message: str) -> RPCError:
    return RPCError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> RPCError:
    return RPCError(grpc.StatusCode.NOT_FOUND, message)


def status_of(e: BaseException) -> tuple[grpc.StatusCode, str]:
    """The code and message an exception answers with (shared with tests and the CLI)."""
    if isinstance(e, RPCError):
        return e.code, str(e)
    if isinstance(e, rt_errors.NotFound) and "ambiguous" in str(e):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)   # a prefix matching several ids: the caller's to fix
    if isinstance(e, rt_errors.NotFound | image_errors.ImageNotFound):
        return grpc.StatusCode.NOT_FOUND, str(e)
    if isinstance(e, rt_errors.InvalidArgument | image_errors.InvalidReference):
        return grpc.StatusCode.INVALID_ARGUMENT, str(e)
    if isinstance(e, rt_errors.AlreadyExists):
        return grpc.StatusCode.ALREADY_EXISTS, str(e)
    if isinstance(e, rt_errors.FailedPrecondition | image_errors.ImageInUse):
        return grpc.StatusCode.FAILED_PRECONDITION, str(e)
    if isinstance(e, rt_errors.Internal):
        return grpc.StatusCode.INTERNAL, str(e)
    if isinstance(e, image_errors.ImageError):
        return grpc.StatusCode.UNKNOWN, str(e)
    if isinstance(e, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED, str(e) or "timed out"
    return grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}"


def rpc(fn: F) -> F:
    """Wrap a servicer method: map exceptions to statuses, log the unexpected ones with a traceback."""

    @functools.wraps(fn)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return fn(self, request, context)
        except Exception as e:  # noqa: BLE001 - everything must become a status
            code, message = status_of(e)
            if code == grpc.StatusCode.INTERNAL and not isinstance(e, rt_errors.Internal | RPCError):
                log.exception("%s failed", fn.__name__)
            else:
                log.info("%s: %s: %s", fn.__name__, code.name, message)
            context.abort(code, message)

    return wrapper  # type: ignore[return-value]
