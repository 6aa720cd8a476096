"""A small git smart-HTTP server for tests, backed by a node's SmartHTTPService.

    with GitHttpBridge(node_address, token) as bridge:
        git(["clone", bridge.url("group/project.git"), dest])

maps ``GET /<relative_path>/info/refs?service=git-upload-pack`` (or
receive-pack) to InfoRefsUploadPack/InfoRefsReceivePack and ``POST
/<relative_path>/git-upload-pack`` (or git-receive-pack) to
PostUploadPack/PostReceivePack on storage `storage`, so that the real git
client can clone, fetch and push through the node. It honours the
`Git-Protocol` header, gzip request bodies and chunked uploads, and streams
both directions without holding a pack in memory.

It runs the stdlib HTTP server in a background thread with a synchronous
gRPC channel, so it works with an in-process node on the test's event loop
(run git with asyncio.to_thread there) as well as with a node process.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import grpc

from praefect.core.tokens import bearer_metadata
from praefect.protos.gitaly import shared_pb2, smarthttp_pb2, smarthttp_pb2_grpc

CHUNK_SIZE = 64 * 1024
SERVICES = ("git-upload-pack", "git-receive-pack")
HTTP_STATUS_FOR_GRPC = {
    grpc.StatusCode.NOT_FOUND: HTTPStatus.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: HTTPStatus.BAD_REQUEST,
    grpc.StatusCode.UNAUTHENTICATED: HTTPStatus.UNAUTHORIZED,
    grpc.StatusCode.PERMISSION_DENIED: HTTPStatus.FORBIDDEN,
}


@dataclass(frozen=True)
class SeenRequest:
    """What the bridge received, so tests can assert how git talked to it."""

    method: str
    path: str
    git_protocol: str
    content_encoding: str
    chunked: bool


@dataclass
class GitHttpBridge:
    node_address: str
    token: str
    storage: str = "default"
    upload_pack_config: Sequence[str] = ()
    receive_pack_config: Sequence[str] = ()
    requests: list[SeenRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._channel: grpc.Channel | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "the bridge is not running"
        return int(self._server.server_address[1])

    def url(self, relative_path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{relative_path}"

    @property
    def stub(self) -> smarthttp_pb2_grpc.SmartHTTPServiceStub:
        assert self._channel is not None, "the bridge is not running"
        return smarthttp_pb2_grpc.SmartHTTPServiceStub(self._channel)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (bearer_metadata(self.token),)

    def repository(self, relative_path: str) -> shared_pb2.Repository:
        return shared_pb2.Repository(storage_name=self.storage, relative_path=relative_path)

    def __enter__(self) -> GitHttpBridge:
        self._channel = grpc.insecure_channel(self.node_address)
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        # Joined on close, so that no request outlives the bridge.
        server.daemon_threads = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long shutdown() may wait
            name="git-http-bridge",
            daemon=True,
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(10)
        if self._channel is not None:
            self._channel.close()


def _handler_for(bridge: GitHttpBridge) -> type[BaseHTTPRequestHandler]:
    class Handler(_BridgeHandler):
        pass

    Handler.bridge = bridge
    return Handler


class _BridgeHandler(BaseHTTPRequestHandler):
    bridge: GitHttpBridge
    protocol_version = "HTTP/1.1"
    timeout = 120  # a stuck client cannot keep a handler thread forever

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self._record()
        if not parts.path.endswith("/info/refs"):
            self._fail(HTTPStatus.NOT_FOUND, "only the smart HTTP protocol is served")
            return
        service = parse_qs(parts.query).get("service", [""])[0]
        if service not in SERVICES:
            self._fail(HTTPStatus.FORBIDDEN, "dumb HTTP is not served: send ?service=git-upload-pack")
            return
        relative_path = parts.path[1 : -len("/info/refs")]
        bridge = self.bridge
        config = bridge.upload_pack_config if service == "git-upload-pack" else bridge.receive_pack_config
        request = smarthttp_pb2.InfoRefsRequest(
            repository=bridge.repository(relative_path),
            git_protocol=self.headers.get("Git-Protocol", ""),
            git_config_options=list(config),
        )
        call = (
            bridge.stub.InfoRefsUploadPack
            if service == "git-upload-pack"
            else bridge.stub.InfoRefsReceivePack
        )
        responses = call(request, metadata=bridge.metadata())
        self._relay(responses, f"application/x-{service}-advertisement")

    def do_POST(self) -> None:
        parts = urlsplit(self.path)
        self._record()
        relative_path, _, service = parts.path[1:].rpartition("/")
        if service not in SERVICES or not relative_path:
            self._fail(HTTPStatus.NOT_FOUND, f"no such endpoint {parts.path}")
            return
        bridge = self.bridge
        first: dict[str, Any] = {
            "repository": bridge.repository(relative_path),
            "git_protocol": self.headers.get("Git-Protocol", ""),
        }
        requests: Iterator[Any]
        if service == "git-upload-pack":
            first["git_config_options"] = list(bridge.upload_pack_config)
            requests = self._request_stream(smarthttp_pb2.PostUploadPackRequest, first)
            responses = bridge.stub.PostUploadPack(requests, metadata=bridge.metadata())
        else:
            first["git_config_options"] = list(bridge.receive_pack_config)
            requests = self._request_stream(smarthttp_pb2.PostReceivePackRequest, first)
            responses = bridge.stub.PostReceivePack(requests, metadata=bridge.metadata())
        self._relay(responses, f"application/x-{service}-result")

    def _record(self) -> None:
        self.bridge.requests.append(
            SeenRequest(
                method=self.command,
                path=self.path,
                git_protocol=self.headers.get("Git-Protocol", ""),
                content_encoding=self.headers.get("Content-Encoding", ""),
                chunked="chunked" in self.headers.get("Transfer-Encoding", "").lower(),
            )
        )

    def _request_stream(self, message: Callable[..., Any], first: dict[str, Any]) -> Iterator[Any]:
        """The request body as gRPC messages: the repository first, then the
        body in chunks (gunzipped when git compressed it)."""
        yield message(**first)
        for chunk in self._body():
            for offset in range(0, len(chunk), CHUNK_SIZE):
                yield message(data=chunk[offset : offset + CHUNK_SIZE])

    def _body(self) -> Iterator[bytes]:
        raw = self._chunked_body() if "chunked" in self.headers.get("Transfer-Encoding", "").lower() else self._sized_body()
        if self.headers.get("Content-Encoding", "").lower() not in ("gzip", "x-gzip"):
            yield from raw
            return
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        for chunk in raw:
            if data := inflater.decompress(chunk):
                yield data
        if data := inflater.flush():
            yield data

    def _sized_body(self) -> Iterator[bytes]:
        remaining = int(self.headers.get("Content-Length", "0"))
        while remaining > 0:
            chunk = self.rfile.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                raise ConnectionError("client closed the connection mid-body")
            remaining -= len(chunk)
            yield chunk

    def _chunked_body(self) -> Iterator[bytes]:
        while True:
            size_line = self.rfile.readline(1024)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers, then the blank line
                    pass
                return
            remaining = size
            while remaining > 0:
                chunk = self.rfile.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    raise ConnectionError("client closed the connection mid-chunk")
                remaining -= len(chunk)
                yield chunk
            self.rfile.readline(1024)  # CRLF after the chunk

    def _relay(self, responses: Iterator[Any], content_type: str) -> None:
        """Send the gRPC responses as a chunked HTTP body. A failure before
        the first message becomes an HTTP error status; a later one cuts the
        connection, which git reports as an error."""
        try:
            first = next(responses, None)
        except grpc.RpcError as error:
            code, details = error.code(), error.details() or ""
            self.bridge.errors.append(f"{code.name}: {details}")
            self._fail(HTTP_STATUS_FOR_GRPC.get(code, HTTPStatus.INTERNAL_SERVER_ERROR), details)
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if first is not None:
                self._write_chunk(first.data)
            for response in responses:
                self._write_chunk(response.data)
        except grpc.RpcError as error:
            self.bridge.errors.append(f"{error.code().name}: {error.details()}")
            self.close_connection = True
            return
        except (BrokenPipeError, ConnectionResetError):
            responses.cancel()  # type: ignore[attr-defined]
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _fail(self, status: HTTPStatus, message: str) -> None:
        body = (message + "\n").encode()
        # The request body may be partly unread: never reuse the connection.
        self.close_connection = True
        self.send_response(status)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
