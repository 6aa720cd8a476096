"""Gitaly authentication tokens.

Gitaly's v2 token is ``v2.<hex HMAC-SHA256(secret, timestamp)>.<timestamp>``
with the timestamp in unix seconds, sent as ``authorization: Bearer <token>``.
It proves knowledge of the secret without sending it, and a captured token
is only good for the accepted clock skew. v1 tokens are the secret itself and
are accepted only where an operator enables them.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
from collections.abc import Iterable

AUTHORIZATION_HEADER = "authorization"
DEFAULT_MAX_SKEW_SECONDS = 30


class TokenProblem(enum.Enum):
    MISSING = "missing"
    MALFORMED = "malformed"
    WRONG = "wrong"
    EXPIRED = "expired"


class TokenError(Exception):
    """The call's token was rejected; `problem` says why."""

    def __init__(self, problem: TokenProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem

    @property
    def unauthenticated(self) -> bool:
        """True when the caller presented no usable credentials at all.

        Maps to UNAUTHENTICATED; a well-formed but wrong or stale token maps
        to PERMISSION_DENIED.
        """
        return self.problem in (TokenProblem.MISSING, TokenProblem.MALFORMED)


def sign_v2(secret: str, now: float | None = None) -> str:
    """Return a v2 token for `secret` valid at `now` (default: the current time)."""
    timestamp = str(int(time.time() if now is None else now))
    mac = hmac.new(secret.encode(), timestamp.encode(), hashlib.sha256).hexdigest()
    return f"v2.{mac}.{timestamp}"


def bearer_metadata(secret: str, now: float | None = None) -> tuple[str, str]:
    """The `authorization` metadata pair carrying a fresh v2 token."""
    return (AUTHORIZATION_HEADER, f"Bearer {sign_v2(secret, now)}")


def authorization_from_metadata(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The value of the `authorization` header, or None when absent."""
    for key, value in metadata or ():
        if key.lower() == AUTHORIZATION_HEADER:
            return value.decode() if isinstance(value, bytes) else value
    return None


def verify(
    authorization: str | None,
    secret: str,
    *,
    allow_v1: bool = False,
    now: float | None = None,
    max_skew: float = DEFAULT_MAX_SKEW_SECONDS,
) -> None:
    """Check an `authorization` header value against `secret`.

    Returns None when the token is good and raises `TokenError` otherwise.
    """
    if not authorization:
        raise TokenError(
            TokenProblem.MISSING,
            "authentication required: send 'authorization: Bearer <token>' metadata",
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError(
            TokenProblem.MALFORMED,
            "malformed authorization header: expected 'Bearer <token>'",
        )
    token = token.strip()
    if token.startswith("v2."):
        _verify_v2(token, secret, now=now, max_skew=max_skew)
        return
    if not allow_v1:
        raise TokenError(
            TokenProblem.MALFORMED,
            "malformed token: expected a v2 token 'v2.<hmac>.<unix time>' "
            "(plain v1 tokens are disabled)",
        )
    if not hmac.compare_digest(token.encode(), secret.encode()):
        raise TokenError(TokenProblem.WRONG, "permission denied: wrong token")


def _verify_v2(token: str, secret: str, *, now: float | None, max_skew: float) -> None:
    parts = token.split(".")
    if len(parts) != 3 or not parts[2].isdigit() or len(parts[1]) != 64:
        raise TokenError(
            TokenProblem.MALFORMED, "malformed token: expected 'v2.<hex hmac>.<unix time>'"
        )
    _, mac, timestamp = parts
    expected = hmac.new(secret.encode(), timestamp.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(mac.lower().encode(), expected.encode()):
        raise TokenError(TokenProblem.WRONG, "permission denied: wrong token")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > max_skew:
        raise TokenError(
            TokenProblem.EXPIRED,
            f"permission denied: token timestamp is more than {int(max_skew)} s "
            "from this server's clock; check NTP on both machines",
        )
