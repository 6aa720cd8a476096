"""`praefect config validate` through click's CliRunner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from praefect.core.cli import main
from praefect.core.cli.options import load_config_or_exit
from praefect.settings import EXAMPLES_DIR

Write = Callable[[str, str], Path]

BAD_TOML = """\
[virtual_storage.praefect]

[virtual_storages.praefect.gitaly-1]
adress = "tcp://127.0.0.1:9001"
token = "internal-token-0123456789"
primary = true

[virtual_storages.praefect.gitaly-2]
address = "tcp://127.0.0.1"
token = ""
primary = "yes"
"""


def test_bad_file_reports_every_problem_and_exits_2(write: Write) -> None:
    path = write("bad.toml", BAD_TOML)
    result = CliRunner().invoke(main, ["config", "validate", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "praefect: 7 problems in the settings:"
    for expected in (
        "auth_token: not set (",
        "virtual_storage: unknown setting (did you mean `virtual_storages`?)",
        "virtual_storages.praefect.gitaly-1.adress: unknown setting (did you mean `address`?)",
        "virtual_storages.praefect.gitaly-1.address: missing required setting (",
        "virtual_storages.praefect.gitaly-2.address: missing port in 'tcp://127.0.0.1' (",
        "virtual_storages.praefect.gitaly-2.token: must not be empty (",
        "virtual_storages.praefect.gitaly-2.primary: expected true or false, got the string 'yes' (",
    ):
        assert any(line.strip().startswith(expected) for line in lines), expected
    assert "internal-token-0123456789" not in result.output


def test_good_file_prints_ok_and_masked_settings(write: Write, good_toml: str) -> None:
    path = write("good.toml", good_toml)
    result = CliRunner().invoke(main, ["config", "validate", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("configuration OK\n")
    assert "[virtual_storages.praefect.gitaly-1]" in result.stdout
    assert 'address = "tcp://127.0.0.1:9001"' in result.stdout
    assert 'token = "****89"' in result.stdout
    assert 'auth_token = "****89"' in result.stdout
    assert "0123456789" not in result.output


def test_settings_file_from_environment(write: Write, good_toml: str) -> None:
    path = write("good.toml", good_toml)
    result = CliRunner().invoke(
        main,
        ["config", "validate"],
        env={"PRAEFECT_SETTINGS_FILE": str(path), "PRAEFECT_LOGGING__LEVEL": "debug"},
    )
    assert result.exit_code == 0, result.output
    assert str(path) in result.stdout
    assert 'level = "debug"' in result.stdout


def test_secrets_option(write: Write) -> None:
    path = write(
        "praefect.toml",
        '[virtual_storages.praefect.gitaly-1]\naddress = "h:1"\nprimary = true\n',
    )
    secrets = write(
        "secrets.toml",
        'auth_token = "s3cr3t-external-token"\n'
        '[virtual_storages.praefect.gitaly-1]\ntoken = "s3cr3t-internal-token"\n',
    )
    args = ["config", "validate", "--config", str(path), "--secrets", str(secrets)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "s3cr3t" not in result.output


def test_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["config", "validate", "--config", str(tmp_path / "nope.toml")]
    )
    assert result.exit_code == 2
    assert "the settings file does not exist" in result.stderr


def test_examples(tmp_path: Path) -> None:
    runner = CliRunner()
    router = runner.invoke(
        main, ["config", "validate", "--config", str(EXAMPLES_DIR / "praefect.toml")]
    )
    assert router.exit_code == 0, router.output
    assert "REPLACE-WITH" not in router.output
    node = runner.invoke(
        main, ["config", "validate", "--node", "--config", str(EXAMPLES_DIR / "node.toml")]
    )
    assert node.exit_code == 0, node.output
    assert 'gitaly-1 = "/var/lib/praefect/gitaly-1"' in node.stdout
    as_router = runner.invoke(
        main, ["config", "validate", "--config", str(EXAMPLES_DIR / "node.toml")]
    )
    assert as_router.exit_code == 2
    assert "virtual_storages: no virtual storage is configured" in as_router.stderr


@pytest.mark.parametrize("args", [["config", "--help"], ["config", "validate", "--help"]])
def test_help(args: list[str]) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert "PRAEFECT_SETTINGS_FILE" in result.output


def test_load_config_or_exit(
    write: Write, capsys: pytest.CaptureFixture[str], good_toml: str
) -> None:
    good = write("good.toml", good_toml)
    assert load_config_or_exit(good).virtual_storage_names == ("praefect",)
    with pytest.raises(SystemExit) as exited:
        load_config_or_exit(write("bad.toml", BAD_TOML))
    assert exited.value.code == 2
    assert "did you mean `virtual_storages`?" in capsys.readouterr().err
