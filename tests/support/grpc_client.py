"""Client side helpers: channels and the auth metadata the node expects."""

from __future__ import annotations

from praefect.core.tokens import bearer_metadata


def auth(token: str, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    return (bearer_metadata(token), *extra)
