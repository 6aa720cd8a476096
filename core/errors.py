"""Errors that become a gRPC status for the client.

Hooks raise these to reject or fail a call with a precise code; the message
is what the client reads, so it says what is wrong and what to do.
"""

from __future__ import annotations

import grpc

__all__ = [
    "AuthenticationError",
    "CallError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class CallError(Exception):
    """Fails the call with ``code`` and ``message``."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AuthenticationError(CallError):
    """Base of the errors ``authenticate`` raises to reject a call."""


class Unauthenticated(AuthenticationError):
    """No usable credentials: missing or malformed."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(AuthenticationError):
    """Credentials that are well formed but wrong or expired."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidArgument(CallError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CallError):
    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(CallError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(CallError):
    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(CallError):
    code = grpc.StatusCode.UNIMPLEMENTED
