"""git's smart HTTP protocol served through SmartHTTPService calls.

    GET  /<path>/info/refs?service=git-upload-pack   -> InfoRefsUploadPack
    GET  /<path>/info/refs?service=git-receive-pack  -> InfoRefsReceivePack
    POST /<path>/git-upload-pack                     -> PostUploadPack
    POST /<path>/git-receive-pack                    -> PostReceivePack

The ``Git-Protocol`` header becomes the calls' git_protocol (``version=2``
selects protocol v2). Bodies stream both ways: request pieces are written
to the call as they are read (gzip undone on the fly), response messages are
written to the client as they arrive, and both sides wait for the slower
peer, so neither a pack nor a negotiation is ever held whole.

The HTTP status is decided by the first response message: an error before
it becomes an HTTP error with the router's message; an error after it can
only cut the connection, which git reports as a failed transfer. A router
that keeps the gateway waiting for that first message longer than the
configured limits is a 504 (gateway.time_limits).
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

import grpc
from aiohttp import HttpVersion11, hdrs, web
from grpc import aio

from praefect.gateway.auth import challenge, check_basic_auth
from praefect.gateway.body import BadRequestBody, body_chunks, check_encoding
from praefect.gateway.config import GatewayConfig
from praefect.gateway.errors import http_error_for_rpc, http_error_for_timeout
from praefect.gateway.paths import BadRepositoryPath, GitEndpoint, split_endpoint
from praefect.gateway.router import (
    RECEIVE_PACK,
    UPLOAD_PACK,
    RouterClient,
    info_refs_method,
    post_pack_method,
)
from praefect.gateway.time_limits import (
    WAITING_FOR_ADVERTISEMENT,
    WAITING_FOR_BODY,
    WAITING_FOR_MORE,
    WAITING_FOR_RESPONSE,
    RouterLimit,
    RouterTimeout,
)

log = logging.getLogger("praefect.gateway")

SERVICES = (UPLOAD_PACK, RECEIVE_PACK)
GIT_PROTOCOL_HEADER = "Git-Protocol"

# What git-http-backend sends with every answer (hdr_nocache): intermediaries
# must never serve a stale ref advertisement or pack.
NO_CACHE_HEADERS = {
    "Expires": "Fri, 01 Jan 1980 00:00:00 GMT",
    "Pragma": "no-cache",
    "Cache-Control": "no-cache, max-age=0, must-revalidate",
}
TEXT_PLAIN = "text/plain; charset=utf-8"


def advertisement_type(service: str) -> str:
    return f"application/x-{service}-advertisement"


def request_type(service: str) -> str:
    return f"application/x-{service}-request"


def result_type(service: str) -> str:
    return f"application/x-{service}-result"


def text_response(status: HTTPStatus, message: str, **headers: str) -> web.Response:
    response = web.Response(
        status=status,
        body=(message.rstrip("\n") + "\n").encode(),
        headers={hdrs.CONTENT_TYPE: TEXT_PLAIN, **headers},
    )
    return response


class GitHttpHandler:
    """The aiohttp handler for every URL; one instance per gateway."""

    def __init__(self, config: GatewayConfig, router: RouterClient) -> None:
        self.config = config
        self.router = router

    async def handle(self, request: web.Request) -> web.StreamResponse:
        auth = check_basic_auth(request.headers.get(hdrs.AUTHORIZATION), self.config.password)
        if not auth.ok:
            return self._refuse(
                request,
                text_response(
                    HTTPStatus.UNAUTHORIZED,
                    auth.message,
                    **{hdrs.WWW_AUTHENTICATE: challenge(self.config.realm)},
                ),
            )
        try:
            endpoint = split_endpoint(request.path)
        except BadRepositoryPath as error:
            return self._refuse(request, text_response(HTTPStatus.BAD_REQUEST, str(error)))
        if endpoint is None:
            return self._refuse(
                request,
                text_response(
                    HTTPStatus.NOT_FOUND,
                    "not a git smart HTTP endpoint: clone http://HOST:PORT/<group>/<project>.git",
                ),
            )
        if endpoint.action == "info/refs":
            return await self._info_refs(request, endpoint)
        return await self._post(request, endpoint, auth.user)

    # -- GET info/refs ---------------------------------------------------

    async def _info_refs(self, request: web.Request, endpoint: GitEndpoint) -> web.StreamResponse:
        if request.method != hdrs.METH_GET:
            return text_response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed on info/refs: use GET",
                **{hdrs.ALLOW: hdrs.METH_GET},
            )
        service = request.query.get("service", "")
        if service not in SERVICES:
            return text_response(
                HTTPStatus.FORBIDDEN,
                "the dumb HTTP protocol is not served: use a git client that speaks smart HTTP "
                "(it asks for info/refs?service=git-upload-pack)",
            )
        path = endpoint.relative_path
        git_protocol = request.headers.get(GIT_PROTOCOL_HEADER, "")
        limit = RouterLimit(
            info_refs_method(service), self.config.advertise_timeout, "--advertise-timeout"
        )
        try:
            call = self.router.info_refs(service, path, git_protocol)
            try:
                first = await limit.wait(call.read(), call, WAITING_FOR_ADVERTISEMENT)
            except aio.AioRpcError as error:
                if not (service == RECEIVE_PACK and error.code() == grpc.StatusCode.NOT_FOUND):
                    return self._rpc_error(error, path)
                # A push to a repository that does not exist creates it, as a
                # first push to a new GitLab project does.
                try:
                    await self.router.create_repository(path)
                    log.info("created repository %s/%s for a push", self.config.storage, path)
                    call = self.router.info_refs(service, path, git_protocol)
                    first = await limit.wait(call.read(), call, WAITING_FOR_ADVERTISEMENT)
                except aio.AioRpcError as retry_error:
                    return self._rpc_error(retry_error, path)
        except RouterTimeout as timeout:
            self._log_timeout(timeout, path)
            return self._timeout_response(timeout, path)
        return await self._relay(
            request, call, first, advertisement_type(service), each_message=(limit, path)
        )

    # -- POST git-upload-pack / git-receive-pack ---------------------------

    async def _post(self, request: web.Request, endpoint: GitEndpoint, user: str) -> web.StreamResponse:
        service = endpoint.action
        if request.method != hdrs.METH_POST:
            return text_response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"{request.method} is not allowed on {service}: use POST",
                **{hdrs.ALLOW: hdrs.METH_POST},
            )
        content_type = request.headers.get(hdrs.CONTENT_TYPE, "")
        if content_type != request_type(service):
            # git-http-backend's wording, so that the message is familiar.
            return self._refuse(
                request,
                text_response(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    f"Expected POST with Content-Type '{request_type(service)}', "
                    f"but received '{content_type}' instead.",
                ),
            )
        encoding = request.headers.get(hdrs.CONTENT_ENCODING, "")
        try:
            check_encoding(encoding)
        except BadRequestBody as error:
            return self._refuse(request, text_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, str(error)))

        path = endpoint.relative_path
        first_request = self.router.first_pack_request(
            service, path, request.headers.get(GIT_PROTOCOL_HEADER, ""), user
        )
        limit = RouterLimit(
            post_pack_method(service), self.config.response_start_timeout, "--response-start-timeout"
        )
        call = self.router.post_pack(service)
        sender = asyncio.create_task(
            self._send_body(call, service, first_request, request, encoding, limit, path)
        )
        reader = asyncio.ensure_future(call.read())
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
            if reader.cancelled():
                # Only the sender cancels the call (on a bad body or a router
                # that takes none of it); it is about to finish with the reason.
                await asyncio.wait({sender})
            elif not reader.done() and _body_error(sender) is None:
                # The whole body is with the router. Only now does the wait
                # for its answer start to count: a push's first response
                # comes after the router has received and checked the whole
                # pack, which may take long to send.
                await asyncio.wait({reader}, timeout=limit.seconds)
                if not reader.done():
                    call.cancel()
                    timeout = RouterTimeout(limit, WAITING_FOR_RESPONSE)
                    self._log_timeout(timeout, path)
                    return self._refuse(request, self._timeout_response(timeout, path))
            else:
                await asyncio.wait({reader})
            body_error = _body_error(sender) if sender.done() else None
            if isinstance(body_error, RouterTimeout):
                return self._refuse(request, self._timeout_response(body_error, path))
            if body_error is not None:
                return self._refuse(request, self._body_error_response(body_error))
            if reader.cancelled():
                return self._refuse(
                    request, text_response(HTTPStatus.INTERNAL_SERVER_ERROR, "the call was cancelled")
                )
            call_error = reader.exception()
            if isinstance(call_error, aio.AioRpcError):
                return self._refuse(request, self._rpc_error(call_error, path))
            if call_error is not None:
                raise call_error
            return await self._relay(request, call, reader.result(), result_type(service))
        finally:
            reader.cancel()
            sender.cancel()
            await asyncio.wait({sender, reader})
            for task in (sender, reader):
                if not task.cancelled():
                    task.exception()  # retrieved: it was handled or logged above
            call.cancel()

    async def _send_body(
        self,
        call: Any,
        service: str,
        first_request: Any,
        request: web.Request,
        encoding: str,
        limit: RouterLimit,
        relative_path: str,
    ) -> None:
        """Write the repository message, then the body piece by piece; each
        write waits for grpc's flow control, which paces reading the client.
        The router must take each piece within the limit (also after its
        answer has started: a router that stops reading is stuck); waiting
        for the client's next piece does not count."""
        try:
            await limit.wait(call.write(first_request), call, WAITING_FOR_BODY)
            async for chunk in body_chunks(request.content, encoding):
                await limit.wait(call.write(self.router.pack_data(service, chunk)), call, WAITING_FOR_BODY)
            await limit.wait(call.done_writing(), call, WAITING_FOR_BODY)
        except (aio.AioRpcError, asyncio.InvalidStateError):
            # The call ended (failed, or the server answered without reading
            # everything): its status, read by the relay, tells the client.
            return
        except RouterTimeout as timeout:
            # Logged here: once the answer has started, nobody else sees it.
            self._log_timeout(timeout, relative_path)
            raise
        except BaseException:
            # A bad or broken body, or a router that takes none of it: the
            # router must not act on half of it.
            call.cancel()
            raise

    def _body_error_response(self, error: BaseException) -> web.Response:
        if isinstance(error, BadRequestBody):
            return text_response(HTTPStatus.BAD_REQUEST, str(error))
        log.info("cannot read a request body: %s", error)
        return text_response(HTTPStatus.BAD_REQUEST, f"cannot read the request body: {error}")

    # -- shared ----------------------------------------------------------

    async def _relay(
        self,
        request: web.Request,
        call: Any,
        first: Any,
        content_type: str,
        each_message: tuple[RouterLimit, str] | None = None,
    ) -> web.StreamResponse:
        """Stream the call's messages to the client, starting with `first`.

        each_message: (limit, relative path) when every next message must
        come within the limit of asking for it. Only the wait for the router
        counts: while the client is slow to take a message, the router fills
        the flow-control window, and the next read finds it there.
        """
        response = web.StreamResponse(status=HTTPStatus.OK, headers={hdrs.CONTENT_TYPE: content_type})
        if request.version >= HttpVersion11:
            response.enable_chunked_encoding()
        # else: HTTP/1.0 has no chunks; the body ends when the connection does.
        message = first
        try:
            await response.prepare(request)
            while message is not aio.EOF:
                if message.data:
                    await response.write(message.data)
                if each_message is None:
                    message = await call.read()
                else:
                    message = await each_message[0].wait(call.read(), call, WAITING_FOR_MORE)
        except RouterTimeout as timeout:
            assert each_message is not None
            self._log_timeout(timeout, each_message[1])
            self._cut(request)
            return response
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not this handler being cancelled: the call was, because the
            # request body broke after the answer had started.
            log.warning("%s %s: the request body failed mid-transfer", request.method, request.path)
            self._cut(request)
            return response
        except aio.AioRpcError as error:
            # The status line is gone already: cut the connection so that git
            # sees an incomplete transfer, never a clean but partial one.
            log.warning(
                "%s %s failed after the response started: %s: %s",
                request.method,
                request.path,
                error.code().name,
                error.details(),
            )
            self._cut(request)
            return response
        except ConnectionError:
            log.info("%s %s: the client went away", request.method, request.path)
            call.cancel()
            return response
        await response.write_eof()
        return response

    def _rpc_error(self, error: aio.AioRpcError, relative_path: str) -> web.Response:
        http_error = http_error_for_rpc(
            error.code(),
            error.details() or "",
            router_addr=self.router.address,
            router_connected=self.router.connected(),
            relative_path=relative_path,
        )
        if http_error.status >= 500:
            log.warning("%s: %s", relative_path, http_error.message)
        return text_response(http_error.status, http_error.message)

    def _log_timeout(self, timeout: RouterTimeout, relative_path: str) -> None:
        limit = timeout.limit
        log.warning(
            "%s: %s: the router at %s did not answer within %g s (%s; %s); cancelled the call",
            relative_path,
            limit.method,
            self.router.address,
            limit.seconds,
            timeout.waiting_for,
            limit.option,
        )

    def _timeout_response(self, timeout: RouterTimeout, relative_path: str) -> web.Response:
        http_error = http_error_for_timeout(
            timeout, router_addr=self.router.address, relative_path=relative_path
        )
        return text_response(http_error.status, http_error.message)

    @staticmethod
    def _refuse(request: web.Request, response: web.Response) -> web.Response:
        """An error answer; the connection closes after it unless the request
        had no body, since a body left unread would be taken for the next
        request."""
        if request.body_exists and not request.content.is_eof():
            response.force_close()
        return response

    @staticmethod
    def _cut(request: web.Request) -> None:
        protocol = request.protocol
        if protocol is not None:
            protocol.force_close()


def _body_error(sender: asyncio.Task[None]) -> BaseException | None:
    if sender.cancelled():
        return None
    return sender.exception()


async def add_no_cache_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare signal: git-http-backend's no-cache headers on
    every answer, errors included."""
    for name, value in NO_CACHE_HEADERS.items():
        response.headers.setdefault(name, value)

