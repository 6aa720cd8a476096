"""Client authentication with the router's ``auth_token``.

Clients send ``authorization: Bearer v2.<hex HMAC-SHA256(auth_token, ts)>.<ts>``
(Gitaly's v2 token; ``ts`` in unix seconds, accepted within ±30 s). Plain v1
tokens (the secret itself) are accepted only with ``auth.allow_v1_tokens``.

- no ``authorization`` header: this plugin returns None; unless another
  plugin recognises the caller, the call fails with ``UNAUTHENTICATED``;
- a malformed header or token: ``UNAUTHENTICATED``;
- a wrong or stale token: ``PERMISSION_DENIED``.

With ``auth.transitioning = true`` every failure is logged and counted
(:func:`auth_stats`) and the call is admitted anyway, so that an operator can
roll tokens out to clients without an outage. The router refuses to start
with an empty ``auth_token`` unless transitioning is on.
"""

from __future__ import annotations

import collections
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from praefect.core import hookimpl
from praefect.core.call import Call, Identity
from praefect.core.errors import PermissionDenied, Unauthenticated
from praefect.core.stash import StashKey
from praefect.core.tokens import DEFAULT_MAX_SKEW_SECONDS, TokenError, TokenProblem, verify

if TYPE_CHECKING:
    from praefect.core.router import Router

__all__ = ["AuthStats", "auth_stats", "authenticate"]

log = logging.getLogger("praefect.auth")

TOKEN_IDENTITY = Identity(subject="token", scheme="token-v2")
V1_IDENTITY = Identity(subject="token", scheme="token-v1")
TRANSITIONING_IDENTITY = Identity(subject="anonymous", scheme="none", transitioning=True)

# Verified v2 tokens are remembered until they leave the accepted window, so
# that a client reusing its token for many calls in one second costs one
# HMAC, not one per call. Bounded: cleared when full.
_CACHE_LIMIT = 4096


@dataclass(slots=True)
class AuthStats:
    """Authentication failures of one router, by problem.

    ``admitted`` counts failed calls let through in transitioning mode.
    """

    failures: collections.Counter[str] = field(default_factory=collections.Counter)
    admitted: int = 0


@dataclass(slots=True)
class _State:
    stats: AuthStats = field(default_factory=AuthStats)
    verified: dict[str, int] = field(default_factory=dict)  # token -> its timestamp


_state_key = StashKey[_State]()


def auth_stats(router: Router) -> AuthStats:
    """The authentication failure counters of ``router``."""
    state: _State = router.stash.setdefault(_state_key, _State())
    return state.stats


@hookimpl(trylast=True)
def authenticate(call: Call) -> Identity | None:
    """Check the call's bearer token against the router's ``auth_token``."""
    auth = call.router.settings.auth
    header = call.header("authorization")
    if isinstance(header, bytes):  # only `-bin` keys carry bytes; be strict anyway
        header = header.decode("latin-1")
    state = call.router.stash.setdefault(_state_key, _State())
    if header is None:
        if auth.transitioning:
            return _admit(state, call, TokenError(TokenProblem.MISSING, "no authorization header"))
        return None
    if _recently_verified(state, header):
        return TOKEN_IDENTITY
    try:
        verify(header, auth.token, allow_v1=auth.allow_v1_tokens)
    except TokenError as error:
        if auth.transitioning:
            return _admit(state, call, error)
        state.stats.failures[error.problem.value] += 1
        if error.unauthenticated:
            raise Unauthenticated(str(error)) from None
        raise PermissionDenied(str(error)) from None
    if header[7:].lstrip().startswith("v2."):
        _remember(state, header)
        return TOKEN_IDENTITY
    return V1_IDENTITY


def _admit(state: _State, call: Call, error: TokenError) -> Identity:
    state.stats.failures[error.problem.value] += 1
    state.stats.admitted += 1
    log.warning(
        "auth.transitioning: admitting %s from %s despite: %s", call.method.name, call.peer, error
    )
    return TRANSITIONING_IDENTITY


def _recently_verified(state: _State, header: str) -> bool:
    timestamp = state.verified.get(header)
    if timestamp is None:
        return False
    if abs(time.time() - timestamp) <= DEFAULT_MAX_SKEW_SECONDS:
        return True
    del state.verified[header]
    return False


def _remember(state: _State, header: str) -> None:
    if len(state.verified) >= _CACHE_LIMIT:
        state.verified.clear()
    state.verified[header] = int(header.rsplit(".", 1)[1])
