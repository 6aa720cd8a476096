"""HTTP basic authentication against the configured secret."""

from __future__ import annotations

import base64

import pytest

from praefect.gateway.auth import AuthProblem, challenge, check_basic_auth


def header(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def test_any_user_with_the_secret_passes_and_is_named() -> None:
    result = check_basic_auth(header("alice:s3cret"), "s3cret")
    assert result.ok
    assert result.user == "alice"


def test_a_password_containing_colons_is_whole() -> None:
    assert check_basic_auth(header("bob:a:b:c"), "a:b:c").ok


@pytest.mark.parametrize(
    ("authorization", "problem"),
    [
        (None, AuthProblem.MISSING),
        ("", AuthProblem.MISSING),
        (header("alice:wrong"), AuthProblem.WRONG),
        (header("alice:"), AuthProblem.WRONG),
        (header("alice:s3cret-and-more"), AuthProblem.WRONG),
        ("Bearer s3cret", AuthProblem.MALFORMED),
        ("Basic !!!not-base64!!!", AuthProblem.MALFORMED),
        (header("no-colon"), AuthProblem.MALFORMED),
        ("Basic", AuthProblem.MALFORMED),
    ],
)
def test_missing_wrong_or_malformed_credentials_are_refused(
    authorization: str | None, problem: AuthProblem
) -> None:
    result = check_basic_auth(authorization, "s3cret")
    assert not result.ok
    assert result.problem is problem
    assert result.message


def test_without_a_secret_every_request_passes() -> None:
    assert check_basic_auth(None, None).ok
    assert check_basic_auth(header("carol:anything"), None).user == "carol"


def test_challenge_names_the_realm() -> None:
    assert challenge("praefect") == 'Basic realm="praefect", charset="UTF-8"'
