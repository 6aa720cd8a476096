"""What the router knows about one gRPC method: the types of the method table.

The table itself is built by :mod:`praefect.core.registry` from the protocol
descriptors; this module only defines its entries so that hooks and plugins
can name them without importing the registry.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from google.protobuf.message import Message

__all__ = ["CallKind", "FieldPath", "MethodInfo", "Operation", "Scope"]

#: Field numbers from the request message down to a field, e.g. ``(1, 1)`` for
#: ``UserCommitFilesRequest.header.repository``.
FieldPath = tuple[int, ...]


class CallKind(enum.Enum):
    """The gRPC call kind, from the method's streaming flags."""

    UNARY_UNARY = "unary"
    UNARY_STREAM = "server-stream"
    STREAM_UNARY = "client-stream"
    STREAM_STREAM = "bidi-stream"

    @property
    def request_streaming(self) -> bool:
        return self in (CallKind.STREAM_UNARY, CallKind.STREAM_STREAM)

    @property
    def response_streaming(self) -> bool:
        return self in (CallKind.UNARY_STREAM, CallKind.STREAM_STREAM)


class Operation(enum.Enum):
    """Gitaly's ``OperationMsg.Operation``: what the method does to a repository."""

    UNKNOWN = 0
    MUTATOR = 1
    ACCESSOR = 2
    MAINTENANCE = 3


class Scope(enum.Enum):
    """Gitaly's ``OperationMsg.Scope``: what the method addresses."""

    REPOSITORY = 0
    STORAGE = 2
    PARTITION = 3


@dataclass(frozen=True, slots=True)
class MethodInfo:
    """One method of the protocol as the router sees it.

    ``name`` is the full gRPC method name, e.g.
    ``/gitaly.RepositoryService/CreateRepository``. Field paths are ``None``
    when the request has no such field.
    """

    name: str
    service: str
    kind: CallKind
    operation: Operation
    scope: Scope
    request_class: type[Message]
    target_repository: FieldPath | None = None
    additional_repository: FieldPath | None = None
    storage_field: FieldPath | None = None
    #: answered by the router itself (service option ``gitaly.intercepted``)
    intercepted: bool = False

    @property
    def short_name(self) -> str:
        """``CreateRepository`` for ``/gitaly.RepositoryService/CreateRepository``."""
        return self.name.rsplit("/", 1)[-1]

    @property
    def is_mutator(self) -> bool:
        return self.operation is Operation.MUTATOR

    @property
    def is_accessor(self) -> bool:
        return self.operation is Operation.ACCESSOR

    @property
    def is_maintenance(self) -> bool:
        return self.operation is Operation.MAINTENANCE
