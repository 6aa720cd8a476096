"""The gateway's client of the router: SmartHTTPService calls, signed.

Every call carries a fresh v2 token for the router's external secret. The
channel is shared by all requests; grpc reconnects on its own when the
router comes back, and its keepalive pings find a connection that died
without a word (host gone, no RST) while a call is in flight.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import grpc
from grpc import aio

from praefect.core.keepalive import client_keepalive_options
from praefect.core.tokens import bearer_metadata
from praefect.gateway.config import GatewayConfig
from praefect.protos.gitaly import (
    repository_pb2,
    repository_pb2_grpc,
    shared_pb2,
    smarthttp_pb2,
    smarthttp_pb2_grpc,
)

UPLOAD_PACK = "git-upload-pack"
RECEIVE_PACK = "git-receive-pack"

# Messages from the router are at most 64 KiB of pack data, but a repository
# with very many refs answers info/refs in larger pieces on some servers.
MAX_MESSAGE_SIZE = 64 * 1024 * 1024

PackRequest: TypeAlias = smarthttp_pb2.PostUploadPackRequest | smarthttp_pb2.PostReceivePackRequest


def info_refs_method(service: str) -> str:
    """The SmartHTTPService method that answers GET info/refs for `service`."""
    return "InfoRefsUploadPack" if service == UPLOAD_PACK else "InfoRefsReceivePack"


def post_pack_method(service: str) -> str:
    """The SmartHTTPService method that answers POST `service`."""
    return "PostUploadPack" if service == UPLOAD_PACK else "PostReceivePack"


def channel_options(config: GatewayConfig) -> list[tuple[str, int]]:
    """Options of the channel to the router.

    Keepalive (praefect.core.keepalive), so that a connection that died
    without a word (host gone, no RST) fails the calls on it instead of
    leaving them waiting forever. No pings without calls: the gateway may
    point at a Gitaly server that keeps gRPC's server defaults (one ping per
    2 hours on a connection without calls, GOAWAY after the third too many);
    during a call such a server rarely stays silent, as git sends something
    every 5 s while it prepares or checks a pack (uploadpack.keepAlive,
    receive.keepAlive). praefect's router and node accept a ping every 10 s.
    """
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_SIZE),
        ("grpc.max_send_message_length", MAX_MESSAGE_SIZE),
        *client_keepalive_options(config.keepalive_time, config.keepalive_timeout),
    ]


class RouterClient:
    """SmartHTTPService and RepositoryService calls to the router at `address`."""

    def __init__(self, config: GatewayConfig) -> None:
        self.address = config.router_addr
        self._token = config.token
        self._storage = config.storage
        self._create_timeout = config.create_repository_timeout
        self._channel = aio.insecure_channel(config.grpc_target, options=channel_options(config))
        self._smarthttp = smarthttp_pb2_grpc.SmartHTTPServiceStub(self._channel)
        self._repository = repository_pb2_grpc.RepositoryServiceStub(self._channel)

    def repository(self, relative_path: str) -> shared_pb2.Repository:
        return shared_pb2.Repository(storage_name=self._storage, relative_path=relative_path)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (bearer_metadata(self._token),)

    def info_refs(self, service: str, relative_path: str, git_protocol: str) -> Any:
        """Start InfoRefsUploadPack or InfoRefsReceivePack; returns the
        unary-stream call (read() it until grpc.aio.EOF)."""
        request = smarthttp_pb2.InfoRefsRequest(
            repository=self.repository(relative_path), git_protocol=git_protocol
        )
        method = (
            self._smarthttp.InfoRefsUploadPack
            if service == UPLOAD_PACK
            else self._smarthttp.InfoRefsReceivePack
        )
        return method(request, metadata=self._metadata())

    def post_pack(self, service: str) -> Any:
        """Start PostUploadPack or PostReceivePack without a request iterator:
        the caller write()s the messages (see `first_pack_request`) and then
        calls done_writing()."""
        method = (
            self._smarthttp.PostUploadPack
            if service == UPLOAD_PACK
            else self._smarthttp.PostReceivePack
        )
        return method(metadata=self._metadata())

    def first_pack_request(
        self, service: str, relative_path: str, git_protocol: str, user: str
    ) -> PackRequest:
        """The first message of a PostUploadPack/PostReceivePack stream: it
        carries the repository; the body follows in `pack_data` messages."""
        repository = self.repository(relative_path)
        if service == UPLOAD_PACK:
            return smarthttp_pb2.PostUploadPackRequest(
                repository=repository, git_protocol=git_protocol
            )
        return smarthttp_pb2.PostReceivePackRequest(
            repository=repository, git_protocol=git_protocol, gl_username=user
        )

    @staticmethod
    def pack_data(service: str, data: bytes) -> PackRequest:
        if service == UPLOAD_PACK:
            return smarthttp_pb2.PostUploadPackRequest(data=data)
        return smarthttp_pb2.PostReceivePackRequest(data=data)

    async def create_repository(self, relative_path: str) -> None:
        """Create an empty repository; one that exists already (a concurrent
        push created it) counts as success."""
        request = repository_pb2.CreateRepositoryRequest(repository=self.repository(relative_path))
        try:
            await self._repository.CreateRepository(
                request, metadata=self._metadata(), timeout=self._create_timeout
            )
        except aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise

    def connected(self) -> bool:
        """True when the channel has a live connection to the router. After
        an UNAVAILABLE error this tells "the router said so" (connected)
        from "the router could not be reached" (not connected)."""
        state = self._channel.get_state(try_to_connect=False)
        return bool(state == grpc.ChannelConnectivity.READY)

    async def close(self) -> None:
        await self._channel.close()
