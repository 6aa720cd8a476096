"""Per-call git options of the transport RPCs: `git_config_options` and
`git_protocol`, validated once for SmartHTTP and SSH alike.

Per-call config reaches git as `-c`, which git trusts like system config:
keys such as uploadpack.packObjectsHook or core.sshCommand run commands.
Callers may therefore only tune the transfer itself (an allow-list of
sections, not a deny-list of keys).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from praefect.node.errors import InvalidArgument

ALLOWED_CONFIG_SECTIONS = frozenset({"uploadpack", "uploadpackfilter", "receive", "transfer", "pack"})
FORBIDDEN_CONFIG_KEYS = frozenset({"uploadpack.packobjectshook"})
_CONFIG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9-]*(\.[^\x00-\x1f]+)?\.[A-Za-z][A-Za-z0-9-]*$")

# GIT_PROTOCOL is a colon-separated list of `key` or `key=value` items.
_PROTOCOL_ITEM = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(=[A-Za-z0-9._-]*)?$")

def git_config_arguments(options: Iterable[str], defaults: Sequence[str] = ()) -> list[str]:
    """`-c key=value` arguments for per-call git config, after validation.

    Raises InvalidArgument for an option that git could read as something
    else than one config pair, or that sets a key outside the transfer
    sections (see ALLOWED_CONFIG_SECTIONS).
    """
    arguments: list[str] = []
    for option in (*defaults, *options):
        key, sep, value = option.partition("=")
        if option.startswith("-") or not sep or not key:
            raise InvalidArgument(
                f"invalid git_config_options entry {option!r}: expected 'section.key=value'"
            )
        if not _CONFIG_KEY.match(key) or "\x00" in value or "\n" in value:
            raise InvalidArgument(
                f"invalid git_config_options entry {option!r}: {key!r} is not a git config key "
                "or the value contains a NUL or newline"
            )
        section = key.split(".", 1)[0].lower()
        if section not in ALLOWED_CONFIG_SECTIONS or key.lower() in FORBIDDEN_CONFIG_KEYS:
            allowed = ", ".join(f"{name}.*" for name in sorted(ALLOWED_CONFIG_SECTIONS))
            raise InvalidArgument(
                f"git_config_options entry {key!r} may not be set per call: only {allowed} keys are "
                "accepted (and not uploadpack.packObjectsHook)"
            )
        arguments += ["-c", option]
    return arguments


def git_protocol_environment(git_protocol: str) -> dict[str, str]:
    """GIT_PROTOCOL for git, as git-http-backend passes the `Git-Protocol`
    header on; empty when the caller speaks protocol v0."""
    if not git_protocol:
        return {}
    if not all(_PROTOCOL_ITEM.match(item) for item in git_protocol.split(":")):
        raise InvalidArgument(
            f"invalid git_protocol {git_protocol!r}: expected items like 'version=2' "
            "separated by ':'"
        )
    return {"GIT_PROTOCOL": git_protocol}


