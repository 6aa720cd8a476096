"""The incoming call as hooks see it.

A :class:`Call` is made once per incoming RPC, before authentication; its
repository fields are filled in once the first request message is decoded.
Plugins read it (method, metadata, repository) and share per-call state
through ``call.stash``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from praefect.core.methods import MethodInfo
from praefect.core.stash import Stash

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = ["Call", "Identity", "Metadata", "RepositoryRef"]

#: gRPC invocation metadata: (key, value) pairs; keys are lower case, values
#: of ``-bin`` keys are bytes.
Metadata = Sequence[tuple[str, str | bytes]]


@dataclass(frozen=True, slots=True)
class RepositoryRef:
    """A repository as the client named it: virtual storage and relative path."""

    virtual_storage: str
    relative_path: str

    def __str__(self) -> str:
        return f"{self.virtual_storage}:{self.relative_path}"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made the call, as an ``authenticate`` hook established it.

    ``scheme`` names how (``"token-v2"``, ``"token-v1"``, ``"api-key"`` ...);
    ``transitioning`` is True when the call was admitted without valid
    credentials because authentication is in transitioning mode.
    """

    subject: str
    scheme: str
    transitioning: bool = False


class Call:
    """One incoming RPC.

    Attributes:
        method: the registry entry of the called method.
        router: the router serving the call (settings, cluster, per-router
            ``stash``).
        metadata: the client's invocation metadata (including its
            ``authorization`` header; the router never forwards that one).
        peer: the client's address as gRPC reports it.
        repository: the target repository, ``None`` for methods without one
            (intercepted services, storage-scoped methods).
        additional_repository: the second repository of methods that have one.
        storage: the virtual storage of storage-scoped methods.
        identity: set by the core after ``authenticate`` admitted the call.
            During ``authenticate`` the request has not been read yet:
            ``repository``, ``additional_repository`` and ``storage`` are
            still None.
        stash: typed per-call state for plugins (see :class:`~praefect.core.stash.StashKey`).
    """

    __slots__ = (
        "additional_repository",
        "identity",
        "metadata",
        "method",
        "peer",
        "repository",
        "router",
        "stash",
        "storage",
    )

    def __init__(
        self,
        method: MethodInfo,
        metadata: Metadata,
        *,
        router: Router,
        peer: str = "",
        repository: RepositoryRef | None = None,
        additional_repository: RepositoryRef | None = None,
        storage: str | None = None,
    ) -> None:
        self.method = method
        self.router = router
        self.metadata = metadata
        self.peer = peer
        self.repository = repository
        self.additional_repository = additional_repository
        self.storage = storage
        self.identity: Identity | None = None
        self.stash = Stash()

    @property
    def virtual_storage(self) -> str | None:
        """The virtual storage the call addresses, if any."""
        if self.repository is not None:
            return self.repository.virtual_storage
        return self.storage

    @property
    def relative_path(self) -> str | None:
        return self.repository.relative_path if self.repository is not None else None

    def header(self, key: str) -> str | bytes | None:
        """The first metadata value for ``key`` (case-insensitive), or None."""
        key = key.lower()
        for name, value in self.metadata:
            if name == key:
                return value
        return None

    def __repr__(self) -> str:
        target = self.repository or self.storage or "-"
        return f"<Call {self.method.name} {target}>"
