"""What ``route`` returns: the nodes a call goes to."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeRef", "RouteDecision"]


@dataclass(frozen=True, slots=True)
class NodeRef:
    """One storage node of one virtual storage.

    ``name`` is the node's storage name (what the router writes into the
    forwarded request's ``storage_name``); ``address`` is the configured
    address, e.g. ``tcp://10.0.0.1:8075``.
    """

    virtual_storage: str
    name: str
    address: str

    def __str__(self) -> str:
        return f"{self.name} ({self.address})"


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one call goes.

    Attributes:
        node: the node the call is forwarded to; the client sees its answer.
            For mutators this is the repository's primary.
        replicas: for mutators, the repository's other replicas: the nodes
            the change must reach by replication (``on_mutation`` receives
            them). Empty for accessors.
        fan_out: further nodes that receive the same call at the same time
            (maintenance); their results are logged, not returned.
        reason: a short explanation for logs and traces, e.g. ``"primary"``.
    """

    node: NodeRef
    replicas: tuple[NodeRef, ...] = ()
    fan_out: tuple[NodeRef, ...] = ()
    reason: str = ""

    @property
    def nodes(self) -> tuple[NodeRef, ...]:
        """Every node the call is sent to: ``node`` first, then ``fan_out``."""
        return (self.node, *self.fan_out)
