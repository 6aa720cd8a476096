"""Validation of a settings mapping against the schema, reporting every problem."""

from __future__ import annotations

import copy
import difflib
import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .errors import Problem, SettingsError
from .model import (
    AuthConfig,
    Config,
    FailoverConfig,
    LoggingConfig,
    NodeConfig,
    NodeServeConfig,
    PluginsConfig,
    RedisConfig,
    ReplicationConfig,
    ServerConfig,
    TracingConfig,
    VirtualStorageConfig,
)
from .schema import MISSING, Key, Requirement, TableNode, iter_keys, schema_tree

__all__ = ["validate"]

_TYPE_WORDS = {
    "str": "a string",
    "bool": "true or false",
    "int": "an integer",
    "float": "a number",
    "list[str]": "a list of strings",
}


def validate(
    data: Mapping[str, Any],
    *,
    require_virtual_storages: bool = True,
    require_node: bool = False,
    origins: Mapping[str, str] | None = None,
    sources: tuple[str, ...] = (),
) -> Config:
    """Check ``data`` against the schema and build a Config.

    ``origins`` maps key paths to where they were set (an environment
    variable), to say so in problems. Raises SettingsError with every problem.
    """
    active = {Requirement.ALWAYS}
    if require_virtual_storages:
        active.add(Requirement.ROUTER)
    if require_node:
        active.add(Requirement.NODE)
    validator = _Validator(frozenset(active), origins or {})
    normalized = validator.table(schema_tree(), data, "")
    validator.check_primaries(normalized.get("virtual_storages"))
    validator.check_processes_share_redis(normalized)
    if validator.problems:
        raise SettingsError(validator.problems)
    return _build(normalized, sources)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _describe(value: Any, *, secret: bool = False) -> str:
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return "a string" if secret else f"the string {value!r}"
    if isinstance(value, int):
        return "an integer" if secret else f"the integer {value}"
    if isinstance(value, float):
        return "a number" if secret else f"the number {value}"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    if value is None:
        return "nothing"
    return f"a {type(value).__name__}"


def _is_empty(value: Any) -> bool:
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple | Mapping):
        return not value
    return value is None


class _Validator:
    def __init__(self, active: frozenset[Requirement], origins: Mapping[str, str]) -> None:
        self.active = active
        self.origins = origins
        self.problems: list[Problem] = []

    def report(self, path: str, message: str, hint: str = "") -> None:
        probe = path
        while probe:
            if probe in self.origins:
                message = f"{message} (set by {self.origins[probe]})"
                break
            probe = probe.rpartition(".")[0]
        self.problems.append(Problem(path, message, hint))

    # ------------------------------------------------------------ tables

    def table(self, node: TableNode, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, Mapping):
            self.report(path, f"expected a table, got {_describe(value)}", node.table.hint)
            value = {}
        out: dict[str, Any] = {}
        for raw_key, item in value.items():
            key = str(raw_key)
            found = node.child(key)
            if found is None:
                self.report(_join(path, key), "unknown setting", self._suggest(node, key))
                continue
            name, schema = found
            child_path = _join(path, name)
            if name in out:
                self.report(child_path, "given more than once (names of settings ignore case)")
                continue
            if schema is node.wildcard and not name.strip():
                self.report(child_path, "the name is empty", node.table.hint)
                continue
            if isinstance(schema, TableNode):
                if (
                    schema is node.wildcard
                    and not isinstance(item, Mapping)
                    and name.lower() in schema.children
                ):
                    what = schema.table.name.strip("<>")
                    self.report(
                        child_path,
                        f"`{name.lower()}` is a setting of a {what}, not a {what}",
                        f"put it in a {what}'s table, e.g. [{_join(path, schema.table.name)}]",
                    )
                    continue
                out[name] = self.table(schema, item, child_path)
            else:
                out[name] = self.key(schema, item, child_path)
        for name, schema in node.children.items():
            if name not in out:
                child_path = _join(path, name)
                if isinstance(schema, TableNode):
                    out[name] = self.table(schema, {}, child_path)
                else:
                    out[name] = self.key(schema, MISSING, child_path)
        if (
            node.wildcard is not None
            and node.table.required in self.active
            and all(name in node.children for name in out)
        ):
            self.report(path, node.table.empty_message, node.table.hint)
        return out

    def _suggest(self, node: TableNode, key: str) -> str:
        elsewhere = {entry.name: entry.path for entry in iter_keys()}
        if key.lower() in elsewhere:  # right name, wrong table
            return f"did you mean `{elsewhere[key.lower()]}`?"
        local = difflib.get_close_matches(key.lower(), list(node.children), n=1, cutoff=0.6)
        if local:
            return f"did you mean `{local[0]}`?"
        far = difflib.get_close_matches(key.lower(), list(elsewhere), n=1, cutoff=0.75)
        if far:
            return f"did you mean `{elsewhere[far[0]]}`?"
        if node.children:
            return "allowed here: " + ", ".join(node.children)
        return "nothing else is allowed here"

    # ------------------------------------------------------------ keys

    def key(self, key: Key, value: Any, path: str) -> Any:
        required = key.required in self.active
        if value is MISSING:
            if key.default is MISSING:
                if required:
                    self.report(path, "missing required setting", key.hint)
                return None
            value = copy.deepcopy(key.default)
            if required and _is_empty(value):
                self.report(path, "not set", key.hint)
            return value
        value = self._coerce(key, value, path)
        if value is None:
            return None
        if key.choices and isinstance(value, str):
            if value.lower() not in key.choices:
                close = difflib.get_close_matches(value.lower(), key.choices, n=1)
                hint = f"did you mean `{close[0]}`?" if close else key.hint
                self.report(path, f"{value!r} is not one of: {', '.join(key.choices)}", hint)
                return None
            value = value.lower()
        if key.minimum is not None and isinstance(value, int | float):
            too_small = value <= key.minimum if key.exclusive_minimum else value < key.minimum
            if too_small:
                bound = "greater than" if key.exclusive_minimum else "at least"
                minimum = int(key.minimum) if float(key.minimum).is_integer() else key.minimum
                self.report(path, f"must be {bound} {minimum}, got {value}", key.hint)
                return None
        if key.maximum is not None and isinstance(value, int | float) and value > key.maximum:
            maximum = int(key.maximum) if float(key.maximum).is_integer() else key.maximum
            self.report(path, f"must be at most {maximum}, got {value}", key.hint)
            return None
        if required and _is_empty(value):
            message = "not set" if value == key.default else "must not be empty"
            self.report(path, message, key.hint)
            return None
        if key.check is not None and isinstance(value, str) and value.strip():
            problem = key.check(value)
            if problem is not None:
                self.report(path, problem, key.hint)
                return None
        return value

    def _coerce(self, key: Key, value: Any, path: str) -> Any:
        ok: bool
        if key.type == "str":
            ok = isinstance(value, str)
        elif key.type == "bool":
            ok = isinstance(value, bool)
        elif key.type == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
        elif key.type == "float":
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if ok and not math.isfinite(value):
                self.report(path, f"must be a finite number, got {value}", key.hint)
                return None
            value = float(value) if ok else value
        else:  # list[str]
            ok = isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
            value = list(value) if ok else value
        if not ok:
            got = _describe(value, secret=key.mask is not None)
            self.report(path, f"expected {_TYPE_WORDS[key.type]}, got {got}", key.hint)
            return None
        return value

    # ------------------------------------------------------------ across keys

    def check_primaries(self, virtual_storages: Any) -> None:
        if not isinstance(virtual_storages, Mapping):
            return
        for vs_name, nodes in virtual_storages.items():
            if not isinstance(nodes, Mapping) or not nodes:
                continue
            path = _join("virtual_storages", vs_name)
            primaries = [
                name
                for name, node in nodes.items()
                if isinstance(node, Mapping) and node.get("primary") is True
            ]
            if not primaries:
                names = ", ".join(nodes)
                self.report(
                    path,
                    "no primary node",
                    f"set primary = true on exactly one of: {names}",
                )
            elif len(primaries) > 1:
                self.report(
                    path,
                    f"{len(primaries)} primary nodes ({', '.join(primaries)})",
                    "exactly one node of a virtual storage may have primary = true",
                )


    def check_processes_share_redis(self, data: Mapping[str, Any]) -> None:
        server = data.get("server")
        redis = data.get("redis")
        if not isinstance(server, Mapping) or not isinstance(redis, Mapping):
            return
        processes = server.get("processes")
        if isinstance(processes, int) and processes > 1 and not redis.get("url"):
            self.report(
                "server.processes",
                f"{processes} router processes need a shared Redis, but redis.url is empty "
                "(the embedded Redis belongs to one process)",
                "set redis.url to a Redis all processes reach, or server.processes = 1",
            )


def _build(d: dict[str, Any], sources: tuple[str, ...]) -> Config:
    return Config(
        listen_addr=d["listen_addr"],
        auth=AuthConfig(
            token=d["auth_token"],
            transitioning=d["auth"]["transitioning"],
            allow_v1_tokens=d["auth"]["allow_v1_tokens"],
        ),
        virtual_storages=tuple(
            VirtualStorageConfig(
                name=vs_name,
                nodes=tuple(
                    NodeConfig(
                        name=node_name,
                        address=node["address"],
                        token=node["token"],
                        primary=node["primary"],
                    )
                    for node_name, node in nodes.items()
                ),
            )
            for vs_name, nodes in d["virtual_storages"].items()
        ),
        redis=RedisConfig(url=d["redis"]["url"], data_dir=d["redis"]["data_dir"]),
        prometheus_listen_addr=d["prometheus_listen_addr"],
        logging=LoggingConfig(**d["logging"]),
        tracing=TracingConfig(**d["tracing"]),
        server=ServerConfig(**d["server"]),
        plugins=PluginsConfig(blocked=tuple(dict.fromkeys(d["plugins"]["blocked"]))),
        replication=ReplicationConfig(**d["replication"]),
        failover=FailoverConfig(**d["failover"]),
        node=NodeServeConfig(
            listen_addr=d["node"]["listen_addr"],
            token=d["node"]["token"],
            storages=MappingProxyType(dict(d["node"]["storages"])),
        ),
        sources=sources,
    )
