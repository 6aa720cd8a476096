"""Loading settings with dynaconf: defaults, deployment file, secrets, environment.

Layers, later ones win (tables are merged key by key, lists are combined):

1. ``settings.toml`` next to this module (the defaults);
2. the deployment file: the ``config_file`` argument, else ``PRAEFECT_SETTINGS_FILE``;
3. the secrets file: the ``secrets_file`` argument, else ``PRAEFECT_SECRETS_FILE``;
4. ``PRAEFECT_``-prefixed environment variables; ``__`` separates nested keys
   (``PRAEFECT_REDIS__URL``, ``PRAEFECT_AUTH__TRANSITIONING=true``).

Only these files are read: dynaconf is given absolute paths and an explicit
root, and none of its searching (``settings.toml`` or ``.secrets.toml`` in the
current or a parent folder, ``*.local.toml``, ``.env``, ``*_FOR_DYNACONF``
variables) is used.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dynaconf import Dynaconf
from dynaconf.loaders import json_loader, toml_loader, yaml_loader
from dynaconf.utils.parse_conf import boolean_fix, parse_conf_data

from .errors import Problem, SettingsError
from .model import Config
from .schema import (
    ENV_PREFIX,
    RESERVED_ENVVARS,
    SECRETS_FILE_ENVVAR,
    SETTINGS_FILE_ENVVAR,
    Key,
    resolve,
)
from .validation import validate

__all__ = ["DEFAULTS_FILE", "EXAMPLES_DIR", "load_config"]

DEFAULTS_FILE = Path(__file__).resolve().with_name("settings.toml")
EXAMPLES_DIR = Path(__file__).resolve().with_name("examples")

_FILE_LOADERS: dict[str, Callable[..., Any]] = {
    ".toml": toml_loader.load,
    ".yaml": yaml_loader.load,
    ".yml": yaml_loader.load,
    ".json": json_loader.load,
}


def load_config(
    config_file: str | os.PathLike[str] | None = None,
    *,
    secrets_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    require_virtual_storages: bool = True,
    require_node: bool = False,
) -> Config:
    """Read, merge and validate the settings; raise SettingsError with every problem.

    ``environ`` defaults to ``os.environ``. ``require_virtual_storages=False``
    is for commands that do not route (``praefect node serve``): virtual
    storages and ``auth_token`` may then be absent (what is present is still
    checked). ``require_node=True`` requires the ``[node]`` table.
    """
    env = os.environ if environ is None else environ
    problems: list[Problem] = []
    files = [DEFAULTS_FILE]
    for given, envvar, what in (
        (config_file, SETTINGS_FILE_ENVVAR, "settings"),
        (secrets_file, SECRETS_FILE_ENVVAR, "secrets"),
    ):
        path = _pick_file(given, env.get(envvar), envvar, what, problems)
        if path is not None:
            files.append(path)
    if problems:
        raise SettingsError(problems)

    settings = _new_dynaconf()
    internal = set(settings.as_dict())
    for path in files:
        try:
            _FILE_LOADERS[path.suffix.lower()](
                settings, env="_envless", silent=False, filename=str(path)
            )
        except Exception as exc:  # each format raises its own errors
            problems.append(Problem(str(path), f"cannot read the file: {exc}"))
    if problems:
        raise SettingsError(problems)

    origins = _apply_environment(settings, env, problems)
    data = {
        str(key).lower(): value for key, value in settings.as_dict().items() if key not in internal
    }
    try:
        config = validate(
            data,
            require_virtual_storages=require_virtual_storages,
            require_node=require_node,
            origins=origins,
            sources=tuple(str(path) for path in files),
        )
    except SettingsError as exc:
        raise SettingsError([*problems, *exc.problems]) from None
    if problems:  # malformed variable names; everything else was fine
        raise SettingsError(problems)
    return config


def _pick_file(
    given: str | os.PathLike[str] | None,
    from_env: str | None,
    envvar: str,
    what: str,
    problems: list[Problem],
) -> Path | None:
    option = "--config" if what == "settings" else "--secrets"
    if given is not None and str(given) != "":
        raw, origin = os.fspath(given), f"the path given with {option} or {envvar}"
    elif from_env:
        raw, origin = from_env, envvar
    else:
        return None
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.is_file():
        problem = "does not exist" if not path.exists() else "is not a file"
        problems.append(Problem(str(path), f"the {what} file {problem}", f"check {origin}"))
        return None
    if path.suffix.lower() not in _FILE_LOADERS:
        problems.append(
            Problem(
                str(path),
                f"the {what} file must be TOML, YAML or JSON",
                "name it *.toml, *.yaml, *.yml or *.json",
            )
        )
        return None
    return path


def _new_dynaconf() -> Any:
    # Every behaviour is spelled out, and dynaconf's own loaders are skipped,
    # so that neither the current folder nor *_FOR_DYNACONF variables matter.
    return Dynaconf(
        root_path=str(DEFAULTS_FILE.parent),
        settings_files=[],
        includes=[],
        preload=[],
        secrets=None,
        environments=False,
        load_dotenv=False,
        envvar_prefix=ENV_PREFIX.rstrip("_"),
        merge_enabled=True,
        nested_separator="__",
        dotted_lookup=True,
        loaders=[],
        core_loaders=[],
        redis_enabled=False,
        vault_enabled=False,
        yaml_loader="safe_load",
        dynaconf_skip_loaders=True,
    )


def _apply_environment(
    settings: Any, env: Mapping[str, str], problems: list[Problem]
) -> dict[str, str]:
    """Apply ``PRAEFECT_*`` overrides; return key path -> variable that set it."""
    origins: dict[str, str] = {}
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in RESERVED_ENVVARS:
            continue
        raw = env[name]
        segments = name[len(ENV_PREFIX) :].split("__")
        if not all(segments):
            problems.append(
                Problem(
                    name,
                    "malformed settings variable",
                    "separate nested keys with a double underscore, e.g. PRAEFECT_REDIS__URL",
                )
            )
            continue
        canonical, schema = resolve(segments)
        if isinstance(schema, Key) and schema.type == "str":
            value: Any = raw  # "0123" stays a string, as a token must
        else:
            value = parse_conf_data(boolean_fix(raw), tomlfy=True, box_settings=settings)
        settings.set("__".join(canonical), value)  # dynaconf nests on "__"
        origins[".".join(canonical)] = f"environment variable {name}"
    return origins
