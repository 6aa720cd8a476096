"""The method registry: every protocol method with what the router needs.

Built from the protocol descriptors in :mod:`praefect.protos` (every service
of ``praefect.protos.gitaly`` and ``praefect.protos.admin``) and their
Gitaly annotations: ``op_type`` on methods, ``intercepted`` on services,
``target_repository`` / ``additional_repository`` / ``storage`` on fields.
A method that is not in the registry is not served (``UNIMPLEMENTED``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType, ModuleType
from typing import Any

from google.protobuf.descriptor import Descriptor, MethodDescriptor
from google.protobuf.message_factory import GetMessageClass

from praefect.core.methods import CallKind, FieldPath, MethodInfo, Operation, Scope
from praefect.protos.gitaly import lint_pb2

__all__ = [
    "DEFAULT_PROTO_PACKAGES",
    "MethodRegistry",
    "RegistryError",
    "build_registry",
    "default_registry",
]

DEFAULT_PROTO_PACKAGES = ("praefect.protos.gitaly", "praefect.protos.admin")

# Nested messages deeper than this are not searched for repository fields;
# Gitaly's deepest annotated field is two levels down.
_MAX_DEPTH = 8


class RegistryError(Exception):
    """The protocol annotations are inconsistent; lists every problem."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("method registry: " + "; ".join(self.problems))


class MethodRegistry:
    """Full method name -> :class:`MethodInfo`, immutable."""

    __slots__ = ("_methods",)

    def __init__(self, methods: Iterable[MethodInfo]) -> None:
        self._methods: Mapping[str, MethodInfo] = MappingProxyType(
            {method.name: method for method in methods}
        )

    def get(self, name: str) -> MethodInfo | None:
        """The method called ``name`` (``/package.Service/Method``), or None."""
        return self._methods.get(name)

    def __getitem__(self, name: str) -> MethodInfo:
        return self._methods[name]

    def __contains__(self, name: object) -> bool:
        return name in self._methods

    def __iter__(self) -> Iterator[MethodInfo]:
        return iter(self._methods.values())

    def __len__(self) -> int:
        return len(self._methods)

    @property
    def services(self) -> tuple[str, ...]:
        """Full service names, e.g. ``gitaly.RepositoryService``, sorted."""
        return tuple(sorted({method.service for method in self}))


def build_registry(packages: Iterable[str] = DEFAULT_PROTO_PACKAGES) -> MethodRegistry:
    """Read every ``*_pb2`` module of ``packages`` and build the registry.

    Raises :class:`RegistryError` when a forwarded method has no operation
    type or a repository-scoped one has no target repository field.
    """
    methods: list[MethodInfo] = []
    problems: list[str] = []
    for module in _pb2_modules(packages):
        for service in module.DESCRIPTOR.services_by_name.values():
            intercepted = bool(service.GetOptions().Extensions[lint_pb2.intercepted])
            for method in service.methods:
                info = _method_info(service.full_name, method, intercepted)
                problems.extend(_problems(info))
                methods.append(info)
    if problems:
        raise RegistryError(problems)
    return MethodRegistry(methods)


@functools.cache
def default_registry() -> MethodRegistry:
    """The registry of the project's protocol, built once per process."""
    return build_registry()


def _pb2_modules(packages: Iterable[str]) -> Iterator[ModuleType]:
    for package_name in packages:
        package = importlib.import_module(package_name)
        for module_info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if module_info.name.endswith("_pb2"):
                yield importlib.import_module(f"{package_name}.{module_info.name}")


def _method_info(service: str, method: MethodDescriptor, intercepted: bool) -> MethodInfo:
    options = method.GetOptions()
    op = options.Extensions[lint_pb2.op_type]
    request = method.input_type
    return MethodInfo(
        name=f"/{service}/{method.name}",
        service=service,
        kind=_kind(method),
        operation=Operation(op.op),
        scope=Scope(op.scope_level),
        request_class=GetMessageClass(request),
        target_repository=_find_field(request, lint_pb2.target_repository),
        additional_repository=_find_field(request, lint_pb2.additional_repository),
        storage_field=_find_field(request, lint_pb2.storage),
        intercepted=intercepted,
    )


def _kind(method: MethodDescriptor) -> CallKind:
    client, server = method.client_streaming, method.server_streaming
    if client and server:
        return CallKind.STREAM_STREAM
    if client:
        return CallKind.STREAM_UNARY
    if server:
        return CallKind.UNARY_STREAM
    return CallKind.UNARY_UNARY


def _find_field(
    message: Descriptor,
    extension: Any,  # an option extension of lint.proto
    depth: int = 0,
    seen: frozenset[str] = frozenset(),
) -> FieldPath | None:
    """The path of the first field marked with ``extension``, depth first."""
    if depth > _MAX_DEPTH or message.full_name in seen:
        return None
    seen = seen | {message.full_name}
    for field in message.fields:
        if field.GetOptions().Extensions[extension]:
            return (field.number,)
    for field in message.fields:
        if field.message_type is not None and not field.is_repeated:
            below = _find_field(field.message_type, extension, depth + 1, seen)
            if below is not None:
                return (field.number, *below)
    return None


def _problems(info: MethodInfo) -> list[str]:
    if info.intercepted:
        return []
    if info.operation is Operation.UNKNOWN:
        return [f"{info.name} has no op_type annotation"]
    if info.scope is Scope.REPOSITORY and info.target_repository is None:
        return [f"{info.name} is repository-scoped but no field is marked target_repository"]
    if info.scope is Scope.STORAGE and info.storage_field is None:
        return [f"{info.name} is storage-scoped but no field is marked storage"]
    return []
