"""gRPC errors from the router turned into HTTP answers git can show.

git prints a text/plain error body line by line as ``remote: ...``, so the
body carries the router's message and what to do about it.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

import grpc

from praefect.gateway.time_limits import RouterTimeout

#: what an operator does about a router that does not answer in time
CHECK_THE_ROUTER = "check the router's log and `praefect check`"

HTTP_STATUS_FOR_GRPC: dict[grpc.StatusCode, HTTPStatus] = {
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.FAILED_PRECONDITION: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.OUT_OF_RANGE: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: HTTPStatus.CONFLICT,
    grpc.StatusCode.ABORTED: HTTPStatus.CONFLICT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.TOO_MANY_REQUESTS,
    grpc.StatusCode.UNIMPLEMENTED: HTTPStatus.NOT_IMPLEMENTED,
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    # The gateway's own token is the only credential the router sees: a
    # rejection is the operator's to fix, not the git user's, so it must not
    # be a 401 (git would ask the user for a password again).
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.BAD_GATEWAY,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.BAD_GATEWAY,
}


@dataclass(frozen=True, slots=True)
class HttpError:
    status: HTTPStatus
    message: str


def http_error_for_rpc(
    code: grpc.StatusCode,
    details: str,
    *,
    router_addr: str,
    router_connected: bool,
    relative_path: str,
) -> HttpError:
    """The HTTP status and message for a call that failed with `code`.

    `router_connected` tells an UNAVAILABLE the router sent (it runs, but no
    node can serve) from one grpc raised because it could not reach it.
    """
    details = details.strip() or code.name
    if code == grpc.StatusCode.UNAVAILABLE and not router_connected:
        return HttpError(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"praefect gateway: the router at {router_addr} is unreachable ({details}); "
            "check that it is running and that the gateway's --router address is right",
        )
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return HttpError(
            HTTPStatus.BAD_GATEWAY,
            f"praefect gateway: the router at {router_addr} rejected the gateway's token "
            f"({details}); the gateway's --token must be the router's auth_token",
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return HttpError(
            HTTPStatus.GATEWAY_TIMEOUT,
            f"praefect gateway: the router at {router_addr} did not answer in time ({details}); "
            f"{CHECK_THE_ROUTER}",
        )
    if code == grpc.StatusCode.NOT_FOUND:
        return HttpError(
            HTTPStatus.NOT_FOUND,
            f"{details} (a push to {relative_path} creates it)",
        )
    status = HTTP_STATUS_FOR_GRPC.get(code, HTTPStatus.INTERNAL_SERVER_ERROR)
    return HttpError(status, f"{details} (router: {code.name})")


def http_error_for_timeout(timeout: RouterTimeout, *, router_addr: str, relative_path: str) -> HttpError:
    """The 504 for a call the gateway gave up on because the router kept it
    waiting longer than a limit allows."""
    limit = timeout.limit
    return HttpError(
        HTTPStatus.GATEWAY_TIMEOUT,
        f"praefect gateway: the router at {router_addr} did not answer within {limit.seconds:g} s "
        f"({limit.method} for {relative_path}, {timeout.waiting_for}); {CHECK_THE_ROUTER} "
        f"({limit.option} sets the limit)",
    )
