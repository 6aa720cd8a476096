"""Errors the node returns, as gRPC status codes with operator-readable text."""

from __future__ import annotations

import grpc


class NodeError(Exception):
    """An error to return to the caller with a specific gRPC status code.

    Messages must never contain a storage's absolute path: the caller only
    knows storage names and relative paths.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])


class InvalidArgument(NodeError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(NodeError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(NodeError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(NodeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Internal(NodeError):
    code = grpc.StatusCode.INTERNAL
