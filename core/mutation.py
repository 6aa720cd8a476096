"""What the mutation hooks receive: a write that went (or goes) to a primary."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from praefect.core.call import Call
from praefect.core.routing_types import NodeRef

if TYPE_CHECKING:  # grpc is heavy to import; every CLI command imports this module
    import grpc

__all__ = ["ChangeType", "Mutation", "MutationFailure", "change_type_for", "records_mutation"]


class ChangeType(enum.Enum):
    """How a mutator changes a repository (what replication must do)."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


# Mutators that bring a repository into existence or remove it; every other
# mutator updates an existing repository.
_CHANGE_TYPES: Mapping[str, ChangeType] = MappingProxyType(
    {
        "/gitaly.RepositoryService/CreateRepository": ChangeType.CREATE,
        "/gitaly.RepositoryService/CreateRepositoryFromBundle": ChangeType.CREATE,
        "/gitaly.RepositoryService/ReplicateRepository": ChangeType.CREATE,
        "/gitaly.RepositoryService/RemoveRepository": ChangeType.DELETE,
    }
)


# Mutators that only advertise refs before a push. They go to the primary
# (the push that follows must negotiate against what the primary has) but
# change nothing, so they record no mutation: the push itself does.
_ROUTE_ONLY_MUTATORS = frozenset({"/gitaly.SmartHTTPService/InfoRefsReceivePack"})


def records_mutation(method: str) -> bool:
    """Whether a successful call of the mutator ``method`` changes the
    repository, and so fires the mutation hooks."""
    return method not in _ROUTE_ONLY_MUTATORS


def change_type_for(method: str) -> ChangeType:
    """The change type of the mutator ``method`` (a full gRPC method name)."""
    return _CHANGE_TYPES.get(method, ChangeType.UPDATE)


@dataclass(frozen=True, slots=True)
class Mutation:
    """A mutator call on one repository, as the mutation hooks see it.

    Attributes:
        virtual_storage: the virtual storage the client addressed.
        relative_path: the repository's relative path.
        method: the full gRPC method name, e.g.
            ``/gitaly.RepositoryService/CreateRepository``.
        change_type: create, update or delete.
        primary: the node the call was forwarded to.
        replicas: the repository's other nodes, which must get the change by
            replication.
        trace_context: W3C trace context (``traceparent``, ``tracestate``)
            of the incoming call, for linking the replication to it.
        call: the incoming call (metadata, identity, stash).
    """

    virtual_storage: str
    relative_path: str
    method: str
    change_type: ChangeType
    primary: NodeRef
    replicas: tuple[NodeRef, ...]
    trace_context: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    call: Call | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class MutationFailure:
    """How a mutator failed on the primary: its gRPC status."""

    code: grpc.StatusCode
    details: str
