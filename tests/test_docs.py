"""The README, config.example.toml and .ci/run must stay true to the code."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import gateway
from gateway.__main__ import _parser
from gateway.config import ConfigFile
from gateway.errors import GatewayError
from tests.schema import schema_paths

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_second() -> None:
    first, second = shell_blocks(README)[:2]
    assert "pip install ." in first and "gateway serve" in first
    assert "pytest" in second and ".[test]" in second
    ci = (ROOT / ".ci" / "run").read_text()
    assert second in ci.splitlines()


def test_readme_config_table_lists_every_option() -> None:
    keys = set(re.findall(r"^\| `([a-z_.A-Z\[\]]+)` \|", README, re.M))
    paths = schema_paths(ConfigFile)
    leaves = {p.replace("*", "NAME") for p in paths if not any(q.startswith((p + ".", p + "[")) for q in paths)}
    assert keys == leaves


def test_readme_cli_table_lists_every_command_and_flag() -> None:
    parser = _parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        if name == "keys":
            actions = sub._subparsers._group_actions[0].choices  # type: ignore[union-attr]
            for action, action_parser in actions.items():
                assert f"`gateway keys {action}" in README
                for option in action_parser._option_string_actions:
                    if option.startswith("--") and option != "--help":
                        assert option in README, (action, option)
            continue
        assert f"`gateway {name}" in README, name
        for option in sub._option_string_actions:
            if option.startswith("--") and option != "--help":
                row = next(line for line in README.splitlines() if line.startswith(f"| `gateway {name}"))
                assert option in row, (name, option)


def _error_classes() -> dict[str, type[GatewayError]]:
    for module in pkgutil.walk_packages(gateway.__path__, "gateway."):
        importlib.import_module(module.name)
    found: dict[str, type[GatewayError]] = {}
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        found[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return found


def test_error_reference_matches_the_error_classes() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    rows = {m.group(1): [cell.strip().strip("`") for cell in m.groups()[1:]] for m in re.finditer(
        r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", doc, re.M)}
    classes = _error_classes()
    assert set(rows) == set(classes), "docs/errors.md and the GatewayError classes disagree"
    for name, cls in classes.items():
        status, error_type, code = rows[name]
        if cls.__name__ == "UpstreamError":  # the provider's own status, type and code
            assert "provider" in status and "provider" in error_type and "provider" in code
            continue
        assert (status, error_type, code) == (str(cls.status), cls.type, cls.default_code), name


def test_every_specific_error_code_in_the_code_is_documented() -> None:
    doc = (ROOT / "docs" / "errors.md").read_text()
    used = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        used |= set(re.findall(r'code="([a-z_]+)"', path.read_text()))
    assert used, "no error codes found"
    missing = {code for code in used if f"`{code}`" not in doc}
    assert missing == set()
