"""Redis keys of health votes and the shared health view.

They live under the virtual storage's hash tag (``praefect:{<vs>}:``, see
:mod:`praefect.plugins.replication.keys`), so one Lua script may read the
votes and change the view of a virtual storage atomically.
"""

from __future__ import annotations

from praefect.plugins.replication.keys import VirtualStorageKeys

__all__ = ["health_view_key", "health_votes_key"]


def health_votes_key(virtual_storage: str) -> str:
    """HASH router id -> JSON ``{"at": ms, "nodes": {node: 1 | 0}}``: each router's last vote."""
    return f"{VirtualStorageKeys(virtual_storage).base}:health:votes"


def health_view_key(virtual_storage: str) -> str:
    """HASH node -> ``up``/``down``, ``since:<node>`` (ms), ``epoch``: the majority's view."""
    return f"{VirtualStorageKeys(virtual_storage).base}:health:view"
