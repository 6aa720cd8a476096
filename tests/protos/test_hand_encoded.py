"""Bytes built by hand from the facts sheet's field numbers decode correctly.

This guards the wire contract independently of the generated code: if a
field number in a .proto drifted, these messages would decode into the
wrong field or into unknown fields.
"""

from __future__ import annotations

from praefect.protos.gitaly import (
    operations_pb2,
    repository_pb2,
    shared_pb2,
    smarthttp_pb2,
    ssh_pb2,
)


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def length_delimited(number: int, payload: bytes) -> bytes:
    return tag(number, 2) + varint(len(payload)) + payload


def varint_field(number: int, value: int) -> bytes:
    return tag(number, 0) + varint(value)


def repository(storage: str, path: str) -> bytes:
    # Repository: 2 storage_name, 3 relative_path, 6 gl_repository
    return (
        length_delimited(2, storage.encode())
        + length_delimited(3, path.encode())
        + length_delimited(6, b"project-1")
    )


def test_create_repository_request() -> None:
    # CreateRepositoryRequest: 1 repository, 2 default_branch, 3 object_format
    raw = (
        length_delimited(1, repository("praefect", "a/b.git"))
        + length_delimited(2, b"trunk")
        + varint_field(3, 2)
    )
    request = repository_pb2.CreateRepositoryRequest.FromString(raw)
    assert request.repository.storage_name == "praefect"
    assert request.repository.relative_path == "a/b.git"
    assert request.repository.gl_repository == "project-1"
    assert request.default_branch == b"trunk"
    assert request.object_format == shared_pb2.OBJECT_FORMAT_SHA256


def test_user_commit_files_header_nested_in_oneof() -> None:
    # UserCommitFilesRequest: 1 header; header: 1 repository, 3 branch_name,
    # 4 commit_message, 11 timestamp (Timestamp: 1 seconds)
    header = (
        length_delimited(1, repository("praefect", "r.git"))
        + length_delimited(3, b"main")
        + length_delimited(4, b"Initial commit")
        + length_delimited(11, varint_field(1, 1_700_000_000))
    )
    request = operations_pb2.UserCommitFilesRequest.FromString(length_delimited(1, header))
    assert request.WhichOneof("user_commit_files_request_payload") == "header"
    assert request.header.repository.relative_path == "r.git"
    assert request.header.branch_name == b"main"
    assert request.header.commit_message == b"Initial commit"
    assert request.header.timestamp.seconds == 1_700_000_000


def test_action_content_chunk() -> None:
    # UserCommitFilesRequest: 2 action; action: 2 content
    request = operations_pb2.UserCommitFilesRequest.FromString(
        length_delimited(2, length_delimited(2, b"# Title\n"))
    )
    assert request.action.content == b"# Title\n"


def test_ssh_upload_pack_request_and_exit_status() -> None:
    # SSHUploadPackRequest: 1 repository, 2 stdin, 4 git_config_options, 5 git_protocol
    raw = (
        length_delimited(1, repository("praefect", "r.git"))
        + length_delimited(2, b"0000")
        + length_delimited(4, b"uploadpack.allowFilter=true")
        + length_delimited(5, b"version=2")
    )
    request = ssh_pb2.SSHUploadPackRequest.FromString(raw)
    assert request.stdin == b"0000"
    assert list(request.git_config_options) == ["uploadpack.allowFilter=true"]
    assert request.git_protocol == "version=2"
    # SSHUploadPackResponse: 3 exit_status { 1 value }
    response = ssh_pb2.SSHUploadPackResponse.FromString(length_delimited(3, varint_field(1, 128)))
    assert response.exit_status.value == 128


def test_post_receive_pack_request() -> None:
    # PostReceivePackRequest: 2 data, 3 gl_id, 6 git_protocol, 7 git_config_options
    raw = (
        length_delimited(2, b"PACK")
        + length_delimited(3, b"user-1")
        + length_delimited(6, b"version=2")
        + length_delimited(7, b"a=b")
    )
    request = smarthttp_pb2.PostReceivePackRequest.FromString(raw)
    assert (request.data, request.gl_id, request.git_protocol) == (b"PACK", "user-1", "version=2")
    assert list(request.git_config_options) == ["a=b"]


def test_unknown_fields_survive_a_round_trip() -> None:
    # A field this project's protos leave out (number 99) must be kept when a
    # message is decoded and re-encoded, as the router does when it rewrites
    # the storage name.
    unknown = length_delimited(99, b"future field")
    raw = length_delimited(1, repository("praefect", "r.git")) + unknown
    request = repository_pb2.RepositoryExistsRequest.FromString(raw)
    request.repository.storage_name = "gitaly-1"
    assert unknown in request.SerializeToString()
