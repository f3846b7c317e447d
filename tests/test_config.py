from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ConfigError, ConfigErrors, ConfigFile, load_config
from tests.conftest import gateway_env, run_cli
from tests.schema import schema_paths

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config.example.toml"
EXAMPLE_ENV = {"OPENAI_API_KEY": "sk-o", "ANTHROPIC_API_KEY": "sk-a", "GEMINI_API_KEY": "g", "GROQ_API_KEY": "q"}


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return str(path)


def error_of(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    return info.value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GATEWAY_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


NAMED_TABLES = ("providers", "routes", "projects", "limits.providers")


def _present_paths(value: Any, prefix: str = "") -> set[str]:
    present: set[str] = set()
    if isinstance(value, dict):
        for key, inner in value.items():
            # Tables keyed by a user's name (providers.NAME, routes.NAME) read as '*'.
            step = "*" if prefix.rstrip(".") in NAMED_TABLES else key
            path = prefix + step
            present.add(path)
            present |= _present_paths(inner, path + ".")
    elif isinstance(value, list):
        for item in value:
            present |= _present_paths(item, prefix.rstrip(".") + "[].")
    return present


def test_example_decodes_and_shows_every_option(clean_env: pytest.MonkeyPatch) -> None:
    for name, value in EXAMPLE_ENV.items():
        clean_env.setenv(name, value)
    config = load_config(str(EXAMPLE))
    assert set(config.providers) == {"openai", "anthropic", "google", "groq", "ollama"}
    assert config.providers["google"].kind == "gemini"
    assert config.providers["google"].base_url == "https://generativelanguage.googleapis.com"
    assert config.providers["anthropic"].base_url == "https://api.anthropic.com"
    assert config.providers["openai"].models == ("gpt-4o", "gpt-4o-mini")
    assert config.data_dir == EXAMPLE.parent / "data"
    # Every field of the schema appears (set, not just mentioned) in the example file.
    expected = schema_paths(ConfigFile)
    assert {"server.port", "providers.*.api_key", "routes.*.weights", "models[].pricing.cache_write"} <= expected
    present = _present_paths(tomllib.loads(EXAMPLE.read_text()))
    assert expected - present == set(), "config.example.toml is missing options"
    extra = {p for p in present if not p.startswith("providers.*.headers.")} - expected
    assert extra == {f"{t}.*" for t in NAMED_TABLES}


def test_no_file_uses_embedded_defaults_and_env_providers(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.chdir(tmp_path)
    config = load_config(None)
    assert config.path is None and config.providers == {}
    assert (config.server.host, config.server.port) == ("127.0.0.1", 8080)
    assert config.data_dir == tmp_path / "data"
    clean_env.setenv("OPENAI_API_KEY", "sk-1")
    clean_env.setenv("GOOGLE_API_KEY", "g-1")
    config = load_config(None)
    assert set(config.providers) == {"openai", "google"}
    assert config.providers["google"].api_key == "g-1"
    assert config.sources == {"openai": "$OPENAI_API_KEY", "google": "$GOOGLE_API_KEY"}


def test_config_found_through_env_var_then_cwd(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9001\n")
    clean_env.setenv("GATEWAY_CONFIG", path)
    assert load_config(None).server.port == 9001
    clean_env.delenv("GATEWAY_CONFIG")
    clean_env.chdir(tmp_path)
    assert load_config(None).server.port == 9001


def test_interpolation(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("GROQ_KEY", "gsk-123")
    config = load_config(write(tmp_path, """
[providers.groq]
type = "openai"
base_url = "${GROQ_URL:-https://api.groq.com/openai/v1}"
api_key = "${GROQ_KEY}"
headers = { "X-Cost" = "$$5" }
"""))
    groq = config.providers["groq"]
    assert groq.base_url == "https://api.groq.com/openai/v1"
    assert groq.api_key == "gsk-123"
    assert groq.headers == {"X-Cost": "$5"}
    assert "gsk-123" not in repr(groq)


@pytest.mark.parametrize(("text", "key", "fragment"), [
    ('[providers.groq]\ntype = "openai"\nbase_url = "https://x/v1"\napi_key = "${NOPE_KEY}"\n',
     "providers.groq.api_key", "NOPE_KEY is not set"),
    ('[server]\nprot = 1\n', "server.prot", "unknown key 'prot'"),
    ('[providers.groq]\ntype = "openai"\nbase_url = "https://x"\napi_kye = "x"\n',
     "providers.groq.api_kye", "unknown key"),
    ('[server]\nport = "eighty"\n', "server.port", "Expected `int`, got `str`"),
    ('[server]\nport = 70000\n', "server.port", "out of range"),
    ('[providers.groq]\ntype = "openai"\nbase_url = "ftp://x"\n', "providers.groq.base_url", "invalid URL"),
    ('[providers.groq]\ntype = "openai"\nbase_url = "not a url"\n', "providers.groq.base_url", "invalid URL"),
    ('[providers.groq]\ntype = "openai"\n', "providers.groq.base_url", "missing base_url"),
    ('[providers.groq]\nbase_url = "https://x/v1"\n', "providers.groq.type", "missing provider type"),
    ('[providers.groq]\ntype = "cohere"\nbase_url = "https://x/v1"\n', "providers.groq.type",
     "'cohere' is not one of: openai, anthropic, gemini"),
    ('[providers.Groq]\ntype = "openai"\nbase_url = "https://x/v1"\n[providers.groq]\ntype = "openai"\n'
     'base_url = "https://y/v1"\n', "providers.groq", "duplicate provider name"),
    ('[providers."a/b"]\ntype = "openai"\nbase_url = "https://x/v1"\n', "providers.a/b", "invalid provider name"),
    ('[providers.openai]\nmodels = ["a", "a"]\n', "providers.openai.models", "duplicate model"),
    ('[providers.openai]\ntimeout = 0\n', "providers.openai.timeout", "positive"),
])
def test_errors_name_the_key(clean_env: pytest.MonkeyPatch, tmp_path: Path, text: str, key: str,
                             fragment: str) -> None:
    error = error_of(tmp_path, text)
    assert error.key == key
    assert fragment in str(error)
    assert "config.toml" in str(error)
    assert error.hint


def test_invalid_toml_and_duplicate_tables_report_the_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    error = error_of(tmp_path, "[server\nport = 1\n")
    assert "invalid TOML" in str(error) and "line 1" in str(error)
    error = error_of(tmp_path, '[providers.openai]\napi_key = "a"\n[providers.openai]\napi_key = "b"\n')
    assert "invalid TOML" in str(error) and "openai" in str(error)


def test_missing_explicit_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(str(tmp_path / "nope.toml"))


def test_check_config_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, '[providers.openai]\napi_key = "sk-x"\n')
    result = run_cli("check-config", "--config", good)
    assert result.returncode == 0, result.stderr
    assert "config OK" in result.stdout and "openai (openai)" in result.stdout
    assert "sk-x" not in result.stdout + result.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('[providers.groq]\ntype = "openai"\nbase_url = "https://x"\napi_key = "${MISSING_X}"\n')
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 2
    assert "providers.groq.api_key" in result.stderr and "MISSING_X" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_bad_config_before_listening(tmp_path: Path) -> None:
    bad = write(tmp_path, "[server]\nport = 1\nbogus = true\n")
    result = run_cli("serve", "--config", bad, env=gateway_env())
    assert result.returncode == 2
    assert "server.bogus" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------- every error at once


def test_every_error_of_the_file_is_reported_at_once(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    error = error_of(tmp_path, """
[server]
port = 70000
prot = 1

[providers.groq]
type = "opnai"
base_url = "https://api.groq.com/openai/v1"

[providers.local]
type = "openai"
base_url = "not a url"
api_key = "${NOPE_KEY}"

[routes.smart]
targets = ["groq/llama-3.3-70b-versatile", "nobody/x"]

[[keys]]
name = "ci"
key = "short"

[[keys]]
name = "ok"
key = "a-long-enough-secret-0123456789"
rpm = 0
""")
    text = str(error)
    expected = {
        "server.port": "out of range",
        "server.prot": "unknown key 'prot'",
        "providers.groq.type": "'opnai' is not one of: openai, anthropic, gemini",
        "providers.local.base_url": "invalid URL",
        "providers.local.api_key": "NOPE_KEY is not set",
        "routes.smart.targets[1]": "unknown provider 'nobody'",
        "keys[0].key": "too short",
        "keys[1].rpm": "must be a positive number",
    }
    for key, fragment in expected.items():
        assert any(f"{key}: " in line and fragment in line for line in text.splitlines()), (key, text)
    assert isinstance(error, ConfigErrors)
    assert [e.key for e in error.errors] == list(expected)  # in file order, each once
    assert error.key == "server.port"  # the first one, as before
    # A provider refused for its own mistake does not also make the routes naming it "unknown provider".
    assert "unknown provider 'groq'" not in text


def test_check_config_prints_every_error(tmp_path: Path) -> None:
    bad = write(tmp_path, '[server]\nport = 0\nworkers = 0\n[providers.x]\ntype = "cohere"\n')
    result = run_cli("check-config", "--config", bad)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("config error in") == 3, result.stderr
    assert "'cohere' is not one of: openai, anthropic, gemini" in result.stderr


def test_enum_errors_list_the_allowed_values(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    error = error_of(tmp_path, '[routes.r]\ntargets = ["openai/a"]\nstrategy = "fastest"\n[providers.openai]\n')
    assert error.key == "routes.r.strategy"
    assert "'fastest' is not one of: fallback, round-robin, weighted, lowest-latency" in str(error)
    error = error_of(tmp_path, '[[keys]]\nname = "a"\nkey = "a-long-enough-secret-012345"\nbudget_period = "year"\n')
    assert "'year' is not one of: day, week, month, total" in str(error) and error.key == "keys[0].budget_period"
