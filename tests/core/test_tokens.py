from __future__ import annotations

import pytest

from praefect.core.tokens import TokenError, TokenProblem, sign_v2, verify

NOW = 1_800_000_000


def test_a_fresh_v2_token_verifies() -> None:
    verify(f"Bearer {sign_v2('secret', NOW)}", "secret", now=NOW)


@pytest.mark.parametrize("skew", [-30, 30])
def test_v2_accepted_within_30_seconds(skew: int) -> None:
    verify(f"Bearer {sign_v2('secret', NOW + skew)}", "secret", now=NOW)


@pytest.mark.parametrize("skew", [-31, 31])
def test_v2_refused_beyond_30_seconds(skew: int) -> None:
    with pytest.raises(TokenError) as info:
        verify(f"Bearer {sign_v2('secret', NOW + skew)}", "secret", now=NOW)
    assert info.value.problem is TokenProblem.EXPIRED
    assert not info.value.unauthenticated


def test_wrong_secret_is_permission_denied() -> None:
    with pytest.raises(TokenError) as info:
        verify(f"Bearer {sign_v2('other', NOW)}", "secret", now=NOW)
    assert info.value.problem is TokenProblem.WRONG
    assert not info.value.unauthenticated


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (None, TokenProblem.MISSING),
        ("", TokenProblem.MISSING),
        ("Basic abc", TokenProblem.MALFORMED),
        ("Bearer ", TokenProblem.MALFORMED),
        ("Bearer v2.zz.123", TokenProblem.MALFORMED),
        ("Bearer v2." + "a" * 64 + ".notanumber", TokenProblem.MALFORMED),
        ("Bearer secret", TokenProblem.MALFORMED),  # v1 disabled
    ],
)
def test_missing_or_malformed_is_unauthenticated(header: str | None, problem: TokenProblem) -> None:
    with pytest.raises(TokenError) as info:
        verify(header, "secret", now=NOW)
    assert info.value.problem is problem
    assert info.value.unauthenticated


def test_v1_only_when_allowed() -> None:
    verify("Bearer secret", "secret", allow_v1=True, now=NOW)
    with pytest.raises(TokenError) as info:
        verify("Bearer nope", "secret", allow_v1=True, now=NOW)
    assert info.value.problem is TokenProblem.WRONG
