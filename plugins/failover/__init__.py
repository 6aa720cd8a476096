"""praefect.plugins.failover: health checks, the shared health view, failover (default plugin).

The parts: ``probe`` (one check of one node), ``votes`` and ``keys`` (the
routers' votes and the majority's view in Redis), ``health`` (the checks and
votes of one router), ``scripts`` (Lua: tally, election, acknowledgement),
``election`` (who may become primary, and holding a write's OK until a
replica has it), ``runtime`` (all of it in one router, and routing around a
down primary) and ``plugin`` (the hooks). Operator commands: ``praefect
failover``, ``praefect accept-dataloss``, ``praefect metadata``
(:mod:`praefect.core.cli.failover_cmd`). Guide: docs/failover.md.
"""

from praefect.plugins.failover.plugin import (
    before_mutation,
    on_mutation,
    on_mutation_failed,
    route,
    shutdown,
    startup,
)

__all__ = [
    "before_mutation",
    "on_mutation",
    "on_mutation_failed",
    "route",
    "shutdown",
    "startup",
]
