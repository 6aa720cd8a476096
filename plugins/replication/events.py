"""Replication events and their encoding as Redis Stream entries.

One stream per (virtual storage, target node), ``praefect:{vs}:events:<node>``,
read by one consumer group per target node; failed events end in
``praefect:{vs}:dead:<node>``. An entry's fields are flat strings:

=============  ===========================================================
``vs``         virtual storage
``path``       relative path of the repository
``change``     ``create``, ``update`` or ``delete``
``source``     node that has the change (empty for a delete without one)
``target``     node that must get the change
``generation`` the repository generation this change produced
``sequence``   the virtual storage's state version at the change: orders
               events of one repository across retries and re-creations
``created_at`` unix time (float) of the mutation
``trace``      JSON object of W3C trace context (``traceparent``, ...)
``attempt``    attempts that already failed (0 for a new event)
``not_before`` unix time before which the event must not be tried (retry
               backoff; 0 for at once)
=============  ===========================================================

The first events of a mutation are written by the Lua script in
``scripts.py`` (atomically with the generation bump); it writes the same
fields, in the order of :data:`FIELDS`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from praefect.core.mutation import ChangeType

__all__ = ["FIELDS", "ChangeType", "EventDecodeError", "ReplicationEvent"]

FIELDS = (
    "vs",
    "path",
    "change",
    "source",
    "target",
    "generation",
    "sequence",
    "created_at",
    "trace",
    "attempt",
    "not_before",
)


class EventDecodeError(ValueError):
    """A stream entry that is not a replication event."""


@dataclass(frozen=True, slots=True)
class ReplicationEvent:
    """A change of one repository that ``target`` must get from ``source``.

    ``stream_id`` is the entry's id once it was read from a stream.
    """

    virtual_storage: str
    relative_path: str
    change: ChangeType
    source: str
    target: str
    generation: int
    sequence: int = 0
    created_at: float = field(default_factory=time.time)
    trace_context: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    attempt: int = 0
    not_before: float = 0.0
    stream_id: str | None = field(default=None, compare=False)

    def encode(self) -> dict[str, str]:
        """The stream entry's fields."""
        return {
            "vs": self.virtual_storage,
            "path": self.relative_path,
            "change": self.change.value,
            "source": self.source,
            "target": self.target,
            "generation": str(self.generation),
            "sequence": str(self.sequence),
            "created_at": repr(self.created_at),
            "trace": encode_trace(self.trace_context),
            "attempt": str(self.attempt),
            "not_before": repr(self.not_before),
        }

    @classmethod
    def decode(cls, fields: Mapping[str, str], stream_id: str | None = None) -> ReplicationEvent:
        """The event of a stream entry; EventDecodeError when a field is missing or bad."""
        try:
            trace = json.loads(fields.get("trace") or "{}")
            if not isinstance(trace, dict):
                raise ValueError("trace is not a JSON object")
            return cls(
                virtual_storage=fields["vs"],
                relative_path=fields["path"],
                change=ChangeType(fields["change"]),
                source=fields.get("source", ""),
                target=fields["target"],
                generation=int(fields["generation"]),
                sequence=int(fields.get("sequence") or 0),
                created_at=float(fields.get("created_at") or 0.0),
                trace_context=MappingProxyType({str(k): str(v) for k, v in trace.items()}),
                attempt=int(fields.get("attempt") or 0),
                not_before=float(fields.get("not_before") or 0.0),
                stream_id=stream_id,
            )
        except (KeyError, ValueError) as error:
            raise EventDecodeError(f"stream entry {stream_id} is not a replication event: {error}") from None

    def retry(self, not_before: float) -> ReplicationEvent:
        """The same event, one attempt later, not to be tried before ``not_before``."""
        return replace(self, attempt=self.attempt + 1, not_before=not_before, stream_id=None)

    @property
    def key(self) -> tuple[str, str, str]:
        """What coalescing groups by: virtual storage, repository, target."""
        return (self.virtual_storage, self.relative_path, self.target)


def encode_trace(trace_context: Mapping[str, str]) -> str:
    return json.dumps(dict(trace_context), separators=(",", ":"), sort_keys=True)
