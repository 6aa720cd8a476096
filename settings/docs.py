"""The operator reference ``docs/configuration.md``, generated from the schema.

    python -m praefect.settings.docs --write docs/configuration.md

A test fails when the committed file differs from :func:`render_reference`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .render import _value
from .schema import MISSING, SCHEMA, Key, Requirement, Table

__all__ = ["render_reference"]

_TYPE_NAMES = {
    "str": "string",
    "bool": "boolean",
    "int": "integer",
    "float": "number",
    "list[str]": "list of strings",
}

_REQUIRED = {
    Requirement.OPTIONAL: "",
    Requirement.ALWAYS: "yes",
    Requirement.ROUTER: "router",
    Requirement.NODE: "node",
}

_INTRO = """\
# Configuration reference

<!-- Generated from settings/schema.py by
     `python -m praefect.settings.docs --write docs/configuration.md`.
     Do not edit by hand: a test compares this file with the schema. -->

## Where settings come from

Settings are read in these layers; a later layer overrides an earlier one.
Tables are merged key by key; lists (`plugins.blocked`) are combined.

1. The defaults, `settings/settings.toml` in the installed package.
2. The deployment file: `--config FILE`, or the path in `PRAEFECT_SETTINGS_FILE`.
3. The secrets file (optional): `--secrets FILE`, or the path in
   `PRAEFECT_SECRETS_FILE`. It has the same shape as the deployment file and
   usually holds only tokens, e.g. `auth_token = "..."` and
   `[virtual_storages.praefect.gitaly-1]` `token = "..."`.
4. Environment variables named `PRAEFECT_` plus the key path, with `__`
   (two underscores) between nested keys:

   | variable | sets |
   |---|---|
   | `PRAEFECT_LISTEN_ADDR=0.0.0.0:2305` | `listen_addr` |
   | `PRAEFECT_AUTH_TOKEN=...` | `auth_token` |
   | `PRAEFECT_REDIS__URL=redis://redis:6379/0` | `redis.url` |
   | `PRAEFECT_AUTH__TRANSITIONING=true` | `auth.transitioning` |
   | `PRAEFECT_PLUGINS__BLOCKED='["name"]'` | `plugins.blocked` |

   Values are read as TOML values (`true`, `5`, `1.5`, `["a", "b"]`), except
   for string keys, which take the text as it is (a token `0123` stays a
   string). Key names ignore case; virtual storage and node names keep
   theirs. A node's token can be set with
   `PRAEFECT_VIRTUAL_STORAGES__praefect__gitaly-1__token`, but a shell cannot
   `export` a name containing `-`: use `env 'NAME=value' praefect ...`, or
   better the secrets file.

Files may be TOML, YAML or JSON (by extension). Only the files named above
are read: a `settings.toml`, `.secrets.toml`, `settings.yaml`, `*.local.toml`
or `.env` in the current folder or a parent is never picked up, and dynaconf's
own `*_FOR_DYNACONF` variables have no effect. An unknown `PRAEFECT_` variable
is reported like an unknown key; `PRAEFECT_SETTINGS_FILE` and
`PRAEFECT_SECRETS_FILE` name files and are not settings.

## Validation

Settings are validated before anything listens, and by
`praefect config validate --config FILE` (add `--node` for a
`praefect node serve` file). Every problem is reported at once, one per line,
as `key.path: what is wrong (how to fix it)`, and the command exits with
status 2. Checked:

- every key is known (a misspelt key gets a "did you mean" hint) and has the
  right type (`"true"` in quotes is a string, not a boolean);
- the router has at least one virtual storage, every virtual storage at least
  one node, and exactly one node per virtual storage has `primary = true`;
- addresses are `tcp://host:port`, `host:port` or `unix:/absolute/path`, with
  a numeric port; IPv6 hosts go in brackets (`[::1]:9001`);
- tokens are not empty; values are among the allowed choices and in range.

The **required** column says when a key must be set (non-empty): `yes`
always, `router` for the router and the admin commands, `node` for
`praefect node serve`. A `<name>` in a key path is a name you choose.

## Keys
"""


_TABLE_REQUIRED = {
    Requirement.ALWAYS: "It must have at least one entry.",
    Requirement.ROUTER: "The router needs at least one entry.",
    Requirement.NODE: "`praefect node serve` needs at least one entry.",
}


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _row(key: Key) -> str:
    kind = _TYPE_NAMES[key.type]
    if key.choices:
        kind = " \\| ".join(f"`{_value(choice)}`" for choice in key.choices)
    default = "" if key.default is MISSING else f"`{_value(key.default)}`"
    hint = _escape(key.hint)
    return f"| `{key.path}` | {kind} | {default} | {_REQUIRED[key.required]} | {hint} |"


def render_reference() -> str:
    """The whole of ``docs/configuration.md``."""
    lines = [_INTRO.rstrip("\n")]
    for entry in SCHEMA:
        if isinstance(entry, Table):
            title = "top level" if not entry.path else f"`[{entry.path}]`"
            hint = _escape(entry.hint[:1].upper() + entry.hint[1:])
            lines += ["", f"### {title}", "", f"{hint}."]
            if entry.required is not Requirement.OPTIONAL:
                lines.append(_TABLE_REQUIRED[entry.required])
            lines += [
                "",
                "| key | type | default | required | description |",
                "|---|---|---|---|---|",
            ]
        else:
            lines.append(_row(entry))
    text = "\n".join(lines) + "\n"
    # tables that only hold other tables get an empty key table: drop it
    return text.replace(
        "| key | type | default | required | description |\n|---|---|---|---|---|\n\n", ""
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Print or write docs/configuration.md.")
    parser.add_argument("--write", metavar="FILE", help="write to FILE instead of printing")
    args = parser.parse_args(argv)
    text = render_reference()
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
