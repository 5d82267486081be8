"""Typed runtime errors; the CRI server maps each to the gRPC status code of the same name."""

from __future__ import annotations


class RuntimeError_(Exception):
    """Base of every error the runtime raises on purpose."""


class NotFound(RuntimeError_):
    pass


class InvalidArgument(RuntimeError_):
    pass


class AlreadyExists(RuntimeError_):
    """Name clash; `existing_id` lets the caller (the kubelet) adopt or remove the other one."""

    def __init__(self, message: str, existing_id: str = "") -> None:
        super().__init__(message)
        self.existing_id = existing_id


class FailedPrecondition(RuntimeError_):
    pass


class Internal(RuntimeError_):
    """The kernel or a child process failed in a way the caller could not have prevented."""
