"""praefect.plugins.replication: the default replication plugin (Redis Streams).

The parts: ``embedded_redis`` (private Redis, Redis URLs), ``state``
(repository state, atomic Lua updates), ``cache`` (every router's in-memory
view), ``events`` and ``streams`` (replication events), ``intents`` (no
crash window), ``worker`` (replay workers), ``runtime`` (all of it in one
process) and ``plugin`` (the router hooks, re-exported here so that the
plugin manager registers this module).
"""

from praefect.plugins.replication.plugin import (
    before_mutation,
    on_mutation,
    on_mutation_failed,
    shutdown,
    startup,
)

__all__ = ["before_mutation", "on_mutation", "on_mutation_failed", "shutdown", "startup"]
