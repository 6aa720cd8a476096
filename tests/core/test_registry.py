"""The method registry built from the protocol descriptors."""

from __future__ import annotations

import pytest

from praefect.core.methods import CallKind, Operation, Scope
from praefect.core.registry import RegistryError, build_registry, default_registry
from praefect.protos.gitaly import operations_pb2, repository_pb2


@pytest.mark.parametrize(
    ("name", "kind", "operation"),
    [
        ("/gitaly.RepositoryService/RepositoryExists", CallKind.UNARY_UNARY, Operation.ACCESSOR),
        ("/gitaly.RepositoryService/CreateRepository", CallKind.UNARY_UNARY, Operation.MUTATOR),
        ("/gitaly.RepositoryService/OptimizeRepository", CallKind.UNARY_UNARY, Operation.MAINTENANCE),
        ("/gitaly.BlobService/GetBlob", CallKind.UNARY_STREAM, Operation.ACCESSOR),
        ("/gitaly.RepositoryService/CreateRepositoryFromBundle", CallKind.STREAM_UNARY, Operation.MUTATOR),
        ("/gitaly.SSHService/SSHUploadPack", CallKind.STREAM_STREAM, Operation.ACCESSOR),
        ("/gitaly.SmartHTTPService/PostReceivePack", CallKind.STREAM_STREAM, Operation.MUTATOR),
    ],
)
def test_call_kind_and_operation_come_from_the_descriptors(name: str, kind: CallKind, operation: Operation) -> None:
    method = default_registry()[name]
    assert (method.kind, method.operation, method.scope) == (kind, operation, Scope.REPOSITORY)
    assert method.target_repository == (1,)
    assert not method.intercepted


def test_nested_target_repository_path() -> None:
    method = default_registry()["/gitaly.OperationService/UserCommitFiles"]
    assert method.target_repository == (1, 1)  # header.repository
    assert method.request_class is operations_pb2.UserCommitFilesRequest


def test_request_class_is_the_generated_message() -> None:
    method = default_registry()["/gitaly.RepositoryService/CreateRepository"]
    assert method.request_class is repository_pb2.CreateRepositoryRequest
    assert method.short_name == "CreateRepository" and method.is_mutator


def test_intercepted_services_are_marked() -> None:
    registry = default_registry()
    assert registry["/gitaly.ServerService/ServerInfo"].intercepted
    assert registry["/praefect.admin.v1.AdminService/ListStorages"].intercepted
    forwarded = [m for m in registry if not m.intercepted]
    assert all(m.operation is not Operation.UNKNOWN for m in forwarded)


def test_every_gitaly_and_admin_service_is_present() -> None:
    services = default_registry().services
    for service in (
        "gitaly.BlobService",
        "gitaly.CommitService",
        "gitaly.DiffService",
        "gitaly.OperationService",
        "gitaly.RefService",
        "gitaly.RepositoryService",
        "gitaly.SSHService",
        "gitaly.ServerService",
        "gitaly.SmartHTTPService",
        "praefect.admin.v1.AdminService",
    ):
        assert service in services


def test_unknown_method_is_absent() -> None:
    assert default_registry().get("/gitaly.Nope/Nothing") is None
    assert "/gitaly.Nope/Nothing" not in default_registry()


def test_the_default_registry_is_built_once() -> None:
    assert default_registry() is default_registry()
    assert len(build_registry()) == len(default_registry())


def test_registry_error_lists_every_problem() -> None:
    error = RegistryError(["/a.B/C has no op_type annotation", "/a.B/D is repository-scoped but ..."])
    assert "/a.B/C" in str(error) and "/a.B/D" in str(error)
