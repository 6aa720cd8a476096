"""Router errors turned into HTTP statuses and messages git can show."""

from __future__ import annotations

from http import HTTPStatus

import grpc
import pytest

from praefect.gateway.errors import http_error_for_rpc

ROUTER = "10.0.0.5:2305"


def error_for(code: grpc.StatusCode, details: str = "details", connected: bool = True) -> tuple[HTTPStatus, str]:
    error = http_error_for_rpc(
        code, details, router_addr=ROUTER, router_connected=connected, relative_path="g/p.git"
    )
    return error.status, error.message


def test_unreachable_router_is_503_naming_it() -> None:
    status, message = error_for(grpc.StatusCode.UNAVAILABLE, "Connection refused", connected=False)
    assert status == HTTPStatus.SERVICE_UNAVAILABLE
    assert f"the router at {ROUTER} is unreachable" in message
    assert "Connection refused" in message


def test_unavailable_from_a_connected_router_passes_its_message() -> None:
    status, message = error_for(grpc.StatusCode.UNAVAILABLE, "no healthy node can serve g/p.git")
    assert status == HTTPStatus.SERVICE_UNAVAILABLE
    assert "no healthy node can serve g/p.git" in message
    assert "unreachable" not in message


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED])
def test_token_rejections_are_the_operators_problem_not_a_401(code: grpc.StatusCode) -> None:
    status, message = error_for(code, "wrong token")
    assert status == HTTPStatus.BAD_GATEWAY
    assert "--token" in message


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.NOT_FOUND, HTTPStatus.NOT_FOUND),
        (grpc.StatusCode.INVALID_ARGUMENT, HTTPStatus.BAD_REQUEST),
        (grpc.StatusCode.FAILED_PRECONDITION, HTTPStatus.BAD_REQUEST),
        (grpc.StatusCode.ALREADY_EXISTS, HTTPStatus.CONFLICT),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, HTTPStatus.TOO_MANY_REQUESTS),
        (grpc.StatusCode.UNIMPLEMENTED, HTTPStatus.NOT_IMPLEMENTED),
        (grpc.StatusCode.DEADLINE_EXCEEDED, HTTPStatus.GATEWAY_TIMEOUT),
        (grpc.StatusCode.INTERNAL, HTTPStatus.INTERNAL_SERVER_ERROR),
        (grpc.StatusCode.UNKNOWN, HTTPStatus.INTERNAL_SERVER_ERROR),
    ],
)
def test_other_codes_map_to_http_with_the_router_message(code: grpc.StatusCode, status: HTTPStatus) -> None:
    got_status, message = error_for(code, "what the router said")
    assert got_status == status
    assert "what the router said" in message
