"""HTTP basic authentication against one configured secret.

Any user name is accepted; the password must equal the secret. The user
name is passed to the router as the pushing user (gl_username), for hooks
and logs. Comparison takes constant time so that response timing does not
reveal how much of a guess was right.
"""

from __future__ import annotations

import binascii
import enum
import hmac
from base64 import b64decode
from dataclasses import dataclass


class AuthProblem(enum.Enum):
    MISSING = "missing"
    MALFORMED = "malformed"
    WRONG = "wrong"


@dataclass(frozen=True, slots=True)
class AuthResult:
    """The outcome of checking one request's Authorization header.

    `user` is the basic-auth user name when one was sent; `problem` is None
    when the request may proceed.
    """

    user: str
    problem: AuthProblem | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def message(self) -> str:
        if self.problem is AuthProblem.MISSING:
            return "authentication required: give the gateway's password (any user name)"
        if self.problem is AuthProblem.MALFORMED:
            return "malformed Authorization header: expected HTTP basic authentication"
        if self.problem is AuthProblem.WRONG:
            return "authentication failed: wrong password for this gateway"
        return "authenticated"


def check_basic_auth(authorization: str | None, secret: str | None) -> AuthResult:
    """Check an ``Authorization`` header value against `secret`.

    With no secret configured every request passes (the user name is still
    taken from the header when there is one).
    """
    user, password = _parse_basic(authorization)
    if secret is None:
        return AuthResult(user or "", None)
    if authorization is None or not authorization.strip():
        return AuthResult("", AuthProblem.MISSING)
    if password is None:
        return AuthResult("", AuthProblem.MALFORMED)
    if not hmac.compare_digest(password.encode(), secret.encode()):
        return AuthResult(user or "", AuthProblem.WRONG)
    return AuthResult(user or "", None)


def challenge(realm: str) -> str:
    """The WWW-Authenticate value that makes git ask for (or send) credentials."""
    return f'Basic realm="{realm}", charset="UTF-8"'


def _parse_basic(authorization: str | None) -> tuple[str | None, str | None]:
    if not authorization:
        return None, None
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None, None
    try:
        decoded = b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, None
    return user, password
