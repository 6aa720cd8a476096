"""Redis key names.

Everything about one virtual storage lives under ``praefect:{<vs>}:``: the
braces are a Redis Cluster hash tag, so all keys of a virtual storage hash
to one slot and a Lua script or MULTI may touch any of them (the repository
hash, the change stream, the intents and the event streams of every target).
Router liveness keys are global (one per router) and are never used inside
a script together with the per-virtual-storage keys.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PREFIX", "VirtualStorageKeys", "group_name", "router_key", "router_key_pattern"]

PREFIX = "praefect"


def _check_name(kind: str, name: str) -> None:
    if not name:
        raise ValueError(f"the {kind} name is empty")
    if "{" in name or "}" in name:
        # A brace would change which part of the key Redis Cluster hashes.
        raise ValueError(f"the {kind} name {name!r} must not contain '{{' or '}}'")


@dataclass(frozen=True, slots=True)
class VirtualStorageKeys:
    """The keys of one virtual storage."""

    virtual_storage: str

    def __post_init__(self) -> None:
        _check_name("virtual storage", self.virtual_storage)

    @property
    def base(self) -> str:
        return f"{PREFIX}:{{{self.virtual_storage}}}"

    @property
    def repositories(self) -> str:
        """SET of the relative paths of tracked repositories."""
        return f"{self.base}:repos"

    def repository(self, relative_path: str) -> str:
        """HASH of one repository: generation, primary, assigned, g:<storage>, version."""
        return f"{self.base}:repo:{relative_path}"

    @property
    def version(self) -> str:
        """Counter bumped by every change of the virtual storage's state."""
        return f"{self.base}:version"

    @property
    def changes(self) -> str:
        """STREAM of state changes (version, path, new state) for the routers' caches."""
        return f"{self.base}:changes"

    @property
    def intents(self) -> str:
        """HASH intent id -> JSON of mutators forwarded but not yet recorded."""
        return f"{self.base}:intents"

    def copy_leases(self, relative_path: str) -> str:
        """ZSET of the copies running into replicas of one repository.

        Member ``<lease id>:<target>``, score the lease's expiry in Redis
        time (ms). Elections skip a target with an unexpired lease, so a node
        is never made primary while ReplicateRepository may still overwrite it.
        """
        return f"{self.base}:copies:{relative_path}"

    def verification_due(self, node: str) -> str:
        """ZSET of the replicas on ``node`` the verification worker checks, by relative path.

        Score: Redis time (ms) of the replica's last verification (at first,
        of when a worker saw it get its generation: a write or copy had just
        succeeded into it), minus the time of the mark for one ``praefect
        verify`` marked. The lowest scores are checked first.
        """
        _check_name("node", node)
        return f"{self.base}:verify:{node}"

    def verification_claims(self, node: str) -> str:
        """HASH relative path -> JSON claim of a verification of the replica on ``node`` under way.

        A claim names its holder's token and expires (Redis time, ms), so a
        worker that dies mid-batch holds its replicas only that long.
        """
        _check_name("node", node)
        return f"{self.base}:verify-claims:{node}"

    def intent_lock(self, intent_id: str) -> str:
        """Short-lived lock taken by the router that resolves an intent."""
        return f"{self.base}:intent-lock:{intent_id}"

    def events(self, target: str) -> str:
        """STREAM of replication events for the node ``target``."""
        _check_name("node", target)
        return f"{self.base}:events:{target}"

    def dead_letters(self, target: str) -> str:
        """STREAM of events for ``target`` that failed every attempt."""
        _check_name("node", target)
        return f"{self.base}:dead:{target}"


def group_name(target: str) -> str:
    """The consumer group of the events for ``target``: one group per target node."""
    return target


def router_key(router_id: str) -> str:
    """Liveness key of a router (expires unless the router refreshes it)."""
    return f"{PREFIX}:router:{router_id}"


def router_key_pattern() -> str:
    return f"{PREFIX}:router:*"
