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
from tests.fakes import FakeUpstream
from tests.inprocess import by_provider, err, gateway_for
from tests.schema import schema_paths

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def shell_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", text, re.S)]


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_them() -> None:
    first, second = shell_blocks(README)[:2]
    assert "install pip . " in first and "gateway serve" in first
    assert "pytest" in second and ".[test]" in second
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/run reads both from this README (tests/test_front_door.py checks what it reads).
    assert "readme_command 1 README.md" in ci and "readme_command 2 README.md" in ci


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


# ------------------------------------------------------------------------- the README's error table


def _readme_error_rows() -> dict[str, tuple[str, str, list[str]]]:
    """situation -> (status, type, codes) of the README's table under 'Errors are always the OpenAI envelope'."""
    table = README.split("Errors are always the OpenAI envelope", 1)[1].split("\n\n", 2)[1]
    rows: dict[str, tuple[str, str, list[str]]] = {}
    for line in table.splitlines()[2:]:
        situation, status, kinds = (cell.strip() for cell in line.strip("|").split("|"))
        error_type, _, codes = kinds.partition(" / ")
        rows[situation] = (status, error_type.strip("`"), re.findall(r"`([a-z_]+)`", codes.split(" (")[0]))
    return rows


def _documented_codes() -> dict[str, tuple[str, str]]:
    """code -> (status, type), from the error classes and docs/errors.md's table of more specific codes."""
    classes = _error_classes()
    codes = {cls.default_code: (str(cls.status), cls.type) for cls in classes.values() if cls.default_code}
    doc = (ROOT / "docs" / "errors.md").read_text()
    for code, cls_name in re.findall(r"^\| `([a-z_]+)` \| `(\w+)` \(\d+\) \|", doc, re.M):
        cls = classes[cls_name]
        codes[code] = (str(cls.status), cls.type)
    return codes


def test_readme_error_table_codes_exist_with_their_status_and_type() -> None:
    rows = _readme_error_rows()
    assert len(rows) >= 10
    codes = _documented_codes()
    for situation, (status, error_type, row_codes) in rows.items():
        if "provider's" in error_type:  # the provider's own status, type and code
            continue
        assert row_codes, situation
        for code in row_codes:
            assert code in codes, (situation, code)
            assert codes[code] == (status, error_type), (situation, code, codes[code])


def _row(phrase: str) -> tuple[str, str, list[str]]:
    (found,) = [row for situation, row in _readme_error_rows().items() if phrase in situation]
    return found


async def test_readme_error_table_matches_what_the_gateway_answers(fake: FakeUpstream, tmp_path: Path) -> None:
    """Each situation the README names, produced for real: the answer's status, type and code are in its row
    (the README once gave `invalid_value` for invalid JSON, which is answered `invalid_request`)."""
    fake.default = by_provider(a=err(401), b=err(400))
    async with gateway_for(fake, tmp_path) as gw:
        auth = {"authorization": f"Bearer {gw.key}"}
        hi = '"messages": [{"role": "user", "content": "hi"}]'
        cases: list[tuple[str, dict[str, str], bytes]] = [
            ("gateway key", {}, b'{"model": "a/m", "messages": []}'),
            ("invalid JSON", auth, b'{"model": "a/m", "messages": ['),
            ("invalid JSON", auth, b'["not an object"]'),
            ("missing or mistyped field", auth, f'{{"model": "a/m", {hi}, "stream": 3}}'.encode()),
            ("missing or mistyped field", auth, b'{"model": "a/m"}'),
            ("unknown provider, model or group", auth, f'{{"model": "nope/m", {hi}}}'.encode()),
            ("refused the gateway's own key", auth, f'{{"model": "a/m", {hi}}}'.encode()),
            ("unreachable", auth, f'{{"model": "dead/m", {hi}}}'.encode()),
        ]
        for phrase, headers, body in cases:
            reply = await gw.http.post("/v1/chat/completions", content=body,
                                       headers={**headers, "content-type": "application/json"})
            error = reply.json()["error"]
            status, error_type, codes = _row(phrase)
            assert (str(reply.status_code), error["type"]) == (status, error_type), (phrase, reply.text)
            assert error["code"] in codes, (phrase, error["code"], codes)
