"""Client side helpers: the auth metadata nodes and routers expect."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

from praefect.core.tokens import bearer_metadata


class FreshAuthMetadata(Sequence[tuple[str, str]]):
    """Call metadata whose v2 token is signed anew each time it is read.

    A v2 token is only good for 30 s, so metadata built once at import time
    would expire in the middle of a long test run; grpc iterates metadata
    once per call, which signs a fresh token for every call.
    """

    def __init__(self, token: str, extra: tuple[tuple[str, str], ...]) -> None:
        self._token = token
        self._extra = extra

    def _items(self) -> tuple[tuple[str, str], ...]:
        return (bearer_metadata(self._token), *self._extra)

    @overload
    def __getitem__(self, index: int) -> tuple[str, str]: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[tuple[str, str]]: ...
    def __getitem__(self, index: int | slice) -> tuple[str, str] | Sequence[tuple[str, str]]:
        return self._items()[index]

    def __len__(self) -> int:
        return 1 + len(self._extra)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items())

    def __add__(self, other: tuple[tuple[str, str], ...]) -> FreshAuthMetadata:
        return FreshAuthMetadata(self._token, (*self._extra, *other))


def auth(token: str, *extra: tuple[str, str]) -> FreshAuthMetadata:
    return FreshAuthMetadata(token, extra)
