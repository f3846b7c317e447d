"""A newcomer's first hour with the command line: every rough edge they hit, driven as they met it."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from gateway import __main__ as cli
from gateway.catalog import format_usd
from gateway.invocation import program
from tests.conftest import gateway_env, run_cli
from tests.fakes import FakeUpstream
from tests.inprocess import gateway_for

USER = [{"role": "user", "content": "hi"}]
PYTHON_M = f"{Path(sys.executable).name} -m gateway"


def config_in(tmp_path: Path) -> str:
    path = tmp_path / "config.toml"
    path.write_text('[server]\ndata_dir = "./state"\n')
    return str(path)


# ----------------------------------------------------------------------------------------- init --force


def test_init_force_with_a_taken_key_name_fails_and_changes_nothing(tmp_path: Path) -> None:
    first = run_cli("init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    config = tmp_path / "config.toml"
    edited = config.read_text() + "\n# my own edit\n"
    config.write_text(edited)
    again = run_cli("init", "--force", cwd=tmp_path)
    assert again.returncode == 1
    assert "a key named 'default' already exists" in again.stderr and "left unchanged" in again.stderr
    assert "wrote" not in again.stderr and again.stdout == ""
    assert config.read_text() == edited
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml", "data"]  # no draft left behind
    other = run_cli("init", "--force", "--key-name", "second", cwd=tmp_path)
    assert other.returncode == 0, other.stderr
    assert other.stdout.startswith("sk-proxy-") and "# my own edit" not in config.read_text()
    assert f"start the gateway with: {PYTHON_M} serve --config config.toml" in other.stderr


# ---------------------------------------------------------------------------------------------- the CLI


def test_keys_list_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    for i in range(3):
        assert run_cli("keys", "create", "--name", f"k{i}", "--config", config).returncode == 0
    read, write = os.pipe()
    os.close(read)  # `| head` that has already read its lines and gone
    try:
        result = subprocess.run([sys.executable, "-m", "gateway", "keys", "list", "--config", config],
                                stdout=write, stderr=subprocess.PIPE, text=True, env=gateway_env(), timeout=30)
    finally:
        os.close(write)
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr, result.stderr
    assert result.returncode == 141  # what a tool killed by SIGPIPE reports


@pytest.mark.parametrize(("flag", "value", "expected"), [
    ("--budget-usd", "abc", "expected a number of US dollars"),
    ("--budget-usd", "nan", "expected a number of US dollars"),
    ("--budget-usd", "inf", "expected a number of US dollars"),
    ("--rpm", "ten", "expected a whole number"),
    ("--tpm", "1.5", "expected a whole number"),
    ("--expires", "31/12/2030", "not a date as YYYY-MM-DD"),
])
def test_bad_flag_values_say_what_is_expected(tmp_path: Path, flag: str, value: str, expected: str) -> None:
    result = run_cli("keys", "create", "--name", "x", flag, value, "--config", config_in(tmp_path))
    assert result.returncode == 2
    assert expected in result.stderr and "invalid" not in result.stderr.split("error:")[1], result.stderr


def test_an_expiry_day_already_begun_is_refused(tmp_path: Path) -> None:
    config = config_in(tmp_path)
    today = datetime.datetime.now(datetime.UTC).date()
    for day in (today - datetime.timedelta(days=1), today):
        result = run_cli("keys", "create", "--name", "x", "--expires", day.isoformat(), "--config", config)
        assert result.returncode == 2 and "already begun" in result.stderr, result.stderr
    assert run_cli("keys", "create", "--name", "x", "--config", config).returncode == 0
    result = run_cli("keys", "update", "x", "--expires", today.isoformat(), "--config", config)
    assert result.returncode == 2 and "already begun" in result.stderr
    tomorrow = (today + datetime.timedelta(days=1)).isoformat()
    assert run_cli("keys", "update", "x", "--expires", tomorrow, "--config", config).returncode == 0


def test_help_is_true() -> None:
    update = " ".join(run_cli("keys", "update", "--help").stdout.split())
    assert "default:" not in update and update.count("unchanged when not given") == 7
    create = run_cli("keys", "create", "--help").stdout
    assert "(default: month)" in create and "unchanged" not in create
    top = run_cli("--help").stdout
    assert f"With no COMMAND, `{PYTHON_M}` runs `{PYTHON_M} serve`" in " ".join(top.split())


def test_hints_name_the_program_as_it_was_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    for typed in ("./gateway", "dist/gateway", "/opt/gw/gateway"):
        monkeypatch.setattr(sys, "argv", [typed, "keys", "list"])
        assert program() == typed
        assert cli._parser().format_usage().startswith(f"usage: {typed} ")
    monkeypatch.setattr(sys, "frozen", False)
    monkeypatch.setattr(sys, "argv", [str(Path(cli.__file__)), "keys"])
    assert program().endswith(" -m gateway")
    assert run_cli("serve", "--help").stdout.startswith(f"usage: {PYTHON_M} serve")


# -------------------------------------------------------------------------------------- budget refusals


def test_money_is_printed_with_enough_digits_to_be_true() -> None:
    assert format_usd(0.0001) == "$0.0001"
    assert format_usd(0.0) == "$0.00"
    assert format_usd(3.2) == "$3.20"
    assert format_usd(0.04 + 1e-15) == "$0.04"
    assert format_usd(1 / 3) == "$0.333333"
    assert format_usd(0.000123456789) == "$0.000123457"


async def test_budget_refusal_says_what_was_reserved_and_how_to_lower_it(fake: FakeUpstream,
                                                                         tmp_path: Path) -> None:
    extra = f'[providers.anthropic]\nbase_url = "{fake.base}"\napi_key = "k"\n'
    async with gateway_for(fake, tmp_path, extra=extra) as gw:
        client = await gw.new_key("opus", budget_usd=0.5)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="anthropic/claude-opus-4-8", messages=USER)  # type: ignore[arg-type]
        message = str(info.value)
        # 128,000 output tokens at $25 per 1M, plus the prompt: about $3.20, reserved up front.
        assert "$0.50 of $0.50 remains" in message and "reserves $3.20" in message, message
        assert "max_tokens" in message
        tiny = await gw.new_key("tiny", budget_usd=0.0001)
        with pytest.raises(openai.RateLimitError) as info:
            await tiny.chat.completions.create(model="anthropic/claude-opus-4-8", messages=USER,  # type: ignore[arg-type]
                                               max_tokens=100)
        assert "$0.0001 of $0.0001 remains" in str(info.value), str(info.value)
        assert not fake.received
