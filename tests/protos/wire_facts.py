"""Parse the Gitaly wire facts sheet into a comparable structure.

The sheet lists, per service, every rpc with its streaming kind and op
annotation, and every message with its field numbers, names and types. The
parsed form is committed as `wire_facts.json` so the tests run without the
sheet; when the sheet is present beside the checkout, a test also checks
that the committed JSON still matches it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

RPC = re.compile(
    r"^rpc (?P<name>\w+) \((?P<kind>[\w-]+)\)(?: op=(?P<op>\w+))?(?: scope=(?P<scope>\w+))?"
    r"(?: target_repository_field=\d+)?(?:: (?P<req>[\w.]+) -> (?P<resp>[\w.]+))?"
)
SERVICE = re.compile(r"^## service (?P<name>[\w.]+)")
MESSAGE = re.compile(r"^\s+message (?P<name>[\w.]+)")
FIELD = re.compile(r"^\s+(?P<number>\d+) (?P<name>\w+): (?P<repeated>repeated )?(?P<type>[\w.]+)(?P<ann> \[\w+\])?")
ENUM = re.compile(r"^\s+enum (?P<name>[\w.]+): (?P<values>.*)")
NESTED_ENUM = re.compile(r"^\s+enum (?P<name>\w+): (?P<values>.*)")

FACTS_JSON = Path(__file__).with_name("wire_facts.json")


def parse(text: str) -> dict[str, Any]:
    services: dict[str, dict[str, Any]] = {}
    messages: dict[str, dict[str, Any]] = {}
    enums: dict[str, dict[str, int]] = {}
    service: str | None = None
    message: str | None = None
    for line in text.splitlines():
        if match := SERVICE.match(line):
            service = match["name"]
            services[service] = {}
            continue
        if match := RPC.match(line):
            assert service is not None
            services[service][match["name"]] = {
                "kind": match["kind"],
                "op": match["op"],
                "scope": match["scope"],
                "request": match["req"],
                "response": match["resp"],
            }
            continue
        if match := MESSAGE.match(line):
            message = match["name"]
            messages.setdefault(message, {})
            continue
        if match := ENUM.match(line):
            name = match["name"]
            if "." not in name and message is not None:
                name = f"{message}.{name}"
            enums[name] = {
                value.split("=")[0]: int(value.split("=")[1])
                for value in match["values"].split(", ")
            }
            continue
        if match := FIELD.match(line):
            assert message is not None
            messages[message][match["number"]] = {
                "name": match["name"],
                "type": match["type"],
                "repeated": bool(match["repeated"]),
                "annotation": (match["ann"] or "").strip(" []") or None,
            }
    return {"services": services, "messages": messages, "enums": enums}


def load() -> dict[str, Any]:
    return json.loads(FACTS_JSON.read_text())


if __name__ == "__main__":  # regenerate: python -m tests.protos.wire_facts SHEET
    import sys

    facts = parse(Path(sys.argv[1]).read_text())
    FACTS_JSON.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
