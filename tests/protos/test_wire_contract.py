"""The project's .proto files match the Gitaly wire facts sheet.

A client built from Gitaly's own definitions must interoperate, so every
service, method, streaming kind, op annotation, field number, name and type
of the sheet is checked against the descriptors the stubs were built from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor

from praefect.protos import gitaly as _gitaly_package  # noqa: F401
from praefect.protos.gitaly import (  # noqa: F401  (imports register descriptors)
    blob_pb2,
    commit_pb2,
    diff_pb2,
    lint_pb2,
    operations_pb2,
    ref_pb2,
    repository_pb2,
    server_pb2,
    shared_pb2,
    smarthttp_pb2,
    ssh_pb2,
)
from tests.protos import wire_facts

FACTS = wire_facts.load()
POOL = descriptor_pool.Default()
SHEET = Path(__file__).resolve().parents[3] / "shared" / "gitaly-wire-facts.md"

SCALARS = {
    "string": FieldDescriptor.TYPE_STRING,
    "bytes": FieldDescriptor.TYPE_BYTES,
    "bool": FieldDescriptor.TYPE_BOOL,
    "int32": FieldDescriptor.TYPE_INT32,
    "int64": FieldDescriptor.TYPE_INT64,
    "uint32": FieldDescriptor.TYPE_UINT32,
    "uint64": FieldDescriptor.TYPE_UINT64,
    "double": FieldDescriptor.TYPE_DOUBLE,
}

RPCS = [
    (service, method, facts)
    for service, methods in FACTS["services"].items()
    for method, facts in methods.items()
]


def _kind(method: MethodDescriptor) -> str:
    return {
        (False, False): "unary",
        (False, True): "server-stream",
        (True, False): "client-stream",
        (True, True): "bidi-stream",
    }[(method.client_streaming, method.server_streaming)]


@pytest.mark.skipif(not SHEET.exists(), reason="facts sheet not beside the checkout")
def test_committed_facts_match_the_sheet() -> None:
    assert wire_facts.parse(SHEET.read_text()) == FACTS, (
        "the facts sheet changed: regenerate with "
        "`python -m tests.protos.wire_facts ../shared/gitaly-wire-facts.md`"
    )


def test_the_sheet_parsed_into_something_substantial() -> None:
    assert len(RPCS) >= 54
    assert len(FACTS["messages"]) >= 130


@pytest.mark.parametrize(("service", "method", "facts"), RPCS, ids=[f"{s}/{m}" for s, m, _ in RPCS])
def test_rpc_exists_with_kind_and_op(service: str, method: str, facts: dict[str, Any]) -> None:
    descriptor = POOL.FindServiceByName(service).methods_by_name.get(method)
    assert descriptor is not None, f"{service}/{method} is missing from protos/"
    assert _kind(descriptor) == facts["kind"]
    assert descriptor.input_type.full_name == facts["request"]
    assert descriptor.output_type.full_name == facts["response"]
    options = descriptor.GetOptions()
    if facts["op"] is None:
        assert not options.HasExtension(lint_pb2.op_type)
        return
    op = options.Extensions[lint_pb2.op_type]
    assert lint_pb2.OperationMsg.Operation.Name(op.op) == facts["op"]
    assert lint_pb2.OperationMsg.Scope.Name(op.scope_level) == facts["scope"]


MESSAGES = sorted(FACTS["messages"].items())


@pytest.mark.parametrize(("message", "fields"), MESSAGES, ids=[m for m, _ in MESSAGES])
def test_message_fields_match(message: str, fields: dict[str, dict[str, Any]]) -> None:
    descriptor: Descriptor = POOL.FindMessageTypeByName(message)
    for number, expected in fields.items():
        field = descriptor.fields_by_number.get(int(number))
        assert field is not None, f"{message} lacks field {number} ({expected['name']})"
        assert field.name == expected["name"]
        assert field.is_repeated == expected["repeated"], field.name
        wanted = expected["type"]
        if wanted in SCALARS:
            assert field.type == SCALARS[wanted], f"{message}.{field.name}"
        elif field.type == FieldDescriptor.TYPE_ENUM:
            assert field.enum_type.full_name == wanted
        else:
            assert field.type == FieldDescriptor.TYPE_MESSAGE, f"{message}.{field.name}"
            assert field.message_type.full_name == wanted
        if expected["annotation"] == "target_repository":
            assert field.GetOptions().Extensions[lint_pb2.target_repository], f"{message}.{field.name}"


ENUMS = sorted(FACTS["enums"].items())


@pytest.mark.parametrize(("enum", "values"), ENUMS, ids=[e for e, _ in ENUMS])
def test_enum_values_match(enum: str, values: dict[str, int]) -> None:
    descriptor = POOL.FindEnumTypeByName(enum)
    assert {v.name: v.number for v in descriptor.values} == values


def test_extension_numbers_are_gitalys() -> None:
    numbers = {
        lint_pb2.intercepted: 82302,
        lint_pb2.op_type: 82303,
        lint_pb2.storage: 91233,
        lint_pb2.repository: 91234,
        lint_pb2.target_repository: 91235,
        lint_pb2.additional_repository: 91236,
    }
    for extension, number in numbers.items():
        assert extension.number == number, extension.full_name


def test_server_service_is_intercepted() -> None:
    options = POOL.FindServiceByName("gitaly.ServerService").GetOptions()
    assert options.Extensions[lint_pb2.intercepted]
