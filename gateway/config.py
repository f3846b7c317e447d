"""config.toml: the schema (msgspec Structs that refuse unknown keys), ${ENV} interpolation, and validation.

Every mistake is reported as a ``ConfigError`` naming the file, the key path and a hint, before
anything listens. ``load_config`` is the one entry point; the server, the CLI and ``check-config`` all
use it, so they report the same errors.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import importlib.util
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from gateway.redaction import redact
from gateway.wire import Problem

ProviderKind = Literal["openai", "anthropic", "gemini"]
PROVIDER_KINDS: tuple[str, ...] = ("openai", "anthropic", "gemini")

# The three well-known provider names: their kind and base URL may be left out. The base URL follows
# each official SDK's convention: OpenAI's includes the version path, Anthropic's and Gemini's are the
# host root (the adapters add /v1/messages and /v1beta/models/...).
WELL_KNOWN: dict[str, tuple[ProviderKind, str]] = {
    "openai": ("openai", "https://api.openai.com/v1"),
    "anthropic": ("anthropic", "https://api.anthropic.com"),
    "google": ("gemini", "https://generativelanguage.googleapis.com"),
}
DEFAULT_BASE_URL_BY_KIND = {kind: url for kind, url in WELL_KNOWN.values()}

# Environment variables that enable a provider when the gateway runs without a config file.
ENV_PROVIDERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("openai", ("OPENAI_API_KEY",)),
    ("anthropic", ("ANTHROPIC_API_KEY",)),
    ("google", ("GEMINI_API_KEY", "GOOGLE_API_KEY")),
)

CONFIG_ENV_VAR = "GATEWAY_CONFIG"
NO_DISCOVERY_ENV_VAR = "GATEWAY_NO_DISCOVERY"  # "1": do not look for a local Ollama server
_T = TypeVar("_T")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ServerConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = "./data"
    workers: int = 1
    max_body_mb: float = 32.0
    # A request body must arrive within body_timeout_s, plus one second per min_body_rate_kbps kB received:
    # a slow but steady upload finishes, a trickle that holds a connection open is cut off with a 408.
    body_timeout_s: float = 30.0
    min_body_rate_kbps: float = 32.0
    max_upstream_body_mb: float = 64.0


class ProviderConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    type: ProviderKind | None = None
    base_url: str | None = None
    api_key: str = ""
    models: list[str] | None = None
    connect_timeout: float = 10.0
    timeout: float = 600.0
    headers: dict[str, str] = {}
    stream_usage: bool = True
    native_paths: list[str] = []  # "METHOD /path/glob" a native route may reach beyond the defaults
    # Serves the Responses API itself (POST {base_url}/responses): /v1/responses forwards the client's body
    # instead of translating. Unset: true for OpenAI's own URL, false for every other server.
    responses: bool | None = None


class RoutingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    retries: int = 2
    backoff_initial_ms: float = 200.0
    backoff_max_ms: float = 4000.0
    retry_after_max_s: float = 10.0
    circuit_failures: int = 5
    circuit_error_rate: float = 0.5
    circuit_window_s: float = 60.0
    circuit_min_requests: int = 10
    circuit_cooldown_s: float = 30.0
    require_project: bool = False
    reload_interval_s: float = 1.0


Strategy = Literal["fallback", "round-robin", "weighted", "lowest-latency"]


class RouteConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    targets: list[str]
    strategy: Strategy = "fallback"
    weights: list[float] | None = None


class ModelConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A model added to the catalog, or catalog fields overridden, for one provider."""

    name: str
    provider: str
    upstream_name: str | None = None
    context_window: int | None = None
    max_output_tokens: int | None = None
    capabilities: CapabilitiesConfig | None = None
    pricing: PricingConfig | None = None


class CapabilitiesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tools: bool | None = None
    json: bool | None = None
    vision: bool | None = None
    reasoning: Literal["none", "low", "medium", "high"] | None = None
    image_output: bool | None = None
    embedding: bool | None = None


class PricingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    input: float | None = None
    output: float | None = None
    cached_input: float | None = None
    cache_write: float | None = None


BudgetPeriod = Literal["day", "week", "month", "total"]


class KeyConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A proxy key declared in the file (read-only from the CLI and the admin page)."""

    name: str
    key: str
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "month"
    rpm: int | None = None
    tpm: int | None = None
    models: list[str] | None = None
    expires: str | None = None  # YYYY-MM-DD (UTC): the key stops working at the start of that day
    project: str | None = None
    native_paths: list[str] = []  # as providers.NAME.native_paths, for this key on every provider


class ProjectConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    budget_usd: float | None = None
    budget_period: BudgetPeriod = "month"


class RateLimitConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rpm: int | None = None
    tpm: int | None = None


class LimitsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    rpm: int | None = None  # all keys together
    tpm: int | None = None
    providers: dict[str, RateLimitConfig] = {}


class UsageConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    retention_days: float = 90.0
    queue_size: int = 100_000
    batch_size: int = 500
    flush_interval_ms: float = 200.0


class AdminConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    token: str | None = None


class LoggingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # Request and response bodies of non-streamed chat requests, kept with their usage record (off:
    # prompts are often private, and bodies make the database grow fast).
    store_bodies: bool = False
    # "json": one JSON object a line (the access line carries the request's usage record fields).
    format: Literal["text", "json"] = "text"


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = True
    # Bearer token GET /metrics requires; without one, /metrics answers only when listening on loopback.
    token: str | None = None


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    # OTLP/HTTP traces URL (e.g. http://collector:4318/v1/traces); empty: the OTEL_EXPORTER_OTLP_* variables.
    endpoint: str = ""
    # Prompts and completions on the request spans (gen_ai.input/output.messages), redacted and cut at 64 KiB.
    capture_content: bool = False


class StateConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where rate buckets, budget reservations and spend counters live (docs/scaling.md)."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None
    # Redis unreachable: "refuse" answers requests of keys with limits with a 503 (fail closed); "allow"
    # serves them unlimited until it is back.
    on_unavailable: Literal["refuse", "allow"] = "refuse"
    # A reservation not renewed for this long (its process was killed) is released.
    hold_ttl_s: float = 30.0


class StoreConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Where keys, usage records and admin sessions are kept (docs/scaling.md): the embedded SQLite file in
    server.data_dir, or a PostgreSQL database that every worker and replica shares."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    postgres_url: str | None = None


class ConfigFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The TOML document as written by the user."""

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = {}
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    routes: dict[str, RouteConfig] = {}
    models: list[ModelConfig] = []
    keys: list[KeyConfig] = []
    projects: dict[str, ProjectConfig] = {}
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    usage: UsageConfig = msgspec.field(default_factory=UsageConfig)
    admin: AdminConfig = msgspec.field(default_factory=AdminConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    tracing: TracingConfig = msgspec.field(default_factory=TracingConfig)


_NAMED_TABLES: dict[str, type[msgspec.Struct]] = {
    "providers": ProviderConfig, "routes": RouteConfig, "projects": ProjectConfig,
}


class Provider(msgspec.Struct, frozen=True, kw_only=True):
    """A provider with its defaults applied: what the rest of the gateway works with."""

    name: str
    kind: ProviderKind
    base_url: str
    api_key: str
    models: tuple[str, ...] | None
    connect_timeout: float
    timeout: float
    headers: dict[str, str]
    stream_usage: bool = True
    native_paths: tuple[str, ...] = ()
    responses: bool = False  # serves POST {base_url}/responses natively

    def __repr__(self) -> str:  # never show the key, whoever prints this object
        return f"Provider(name={self.name!r}, kind={self.kind!r}, base_url={self.base_url!r})"


@dataclass(frozen=True)
class Config:
    server: ServerConfig
    providers: dict[str, Provider]
    data_dir: Path
    path: Path | None = None
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    routes: dict[str, RouteConfig] = field(default_factory=dict)
    models: list[ModelConfig] = field(default_factory=list)
    keys: list[KeyConfig] = field(default_factory=list)
    projects: dict[str, ProjectConfig] = field(default_factory=dict)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)
    sources: dict[str, str] = field(default_factory=dict)  # provider name -> env var that enabled it


class ConfigError(Exception):
    def __init__(self, file: str, key: str | None, message: str, hint: str | None = None) -> None:
        self.file = file
        self.key = key
        self.message = message
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}: " if self.key else f"{self.file}: "
        text = f"config error in {where}{self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class ConfigErrors(ConfigError):
    """Every mistake found in one file, in file order; ``key``, ``message`` and ``hint`` are the first's."""

    def __init__(self, errors: list[ConfigError]) -> None:
        self.errors = errors
        first = errors[0]
        super().__init__(first.file, first.key, first.message, first.hint)

    def __str__(self) -> str:
        return "\n".join(ConfigError.__str__(error) for error in self.errors)


# ---------------------------------------------------------------------------------------------- loading


def find_config_path(explicit: str | None) -> Path | None:
    """--config, then $GATEWAY_CONFIG, then ./config.toml; None means the embedded defaults."""
    for candidate, must_exist in ((explicit, True), (os.environ.get(CONFIG_ENV_VAR), True)):
        if candidate:
            path = Path(candidate).expanduser()
            if must_exist and not path.is_file():
                raise ConfigError(str(path), None, "file not found", "check the path given to --config "
                                  f"or ${CONFIG_ENV_VAR}")
            return path
    local = Path("config.toml")
    return local if local.is_file() else None


def load_config(explicit: str | None = None) -> Config:
    path = find_config_path(explicit)
    if path is None:
        return defaults_from_env()
    return load_config_file(path)


def load_config_file(path: Path) -> Config:
    file = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, None, f"invalid TOML: {exc}", "fix the syntax at the line shown") from None
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read file: {exc.strerror}", "check its permissions") from None
    except UnicodeDecodeError:
        raise ConfigError(file, None, "the file is not valid UTF-8", "save it as UTF-8") from None
    return _load_reporting_all(raw, file, path)


def _parse(raw: dict[str, Any], file: str, path: Path) -> Config:
    data = interpolate(raw, file)
    # msgspec shows a dict member as "[...]" in error paths; checking each named table first lets
    # the error name it (providers.groq.api_kye rather than providers[...].api_kye).
    for table, schema in _NAMED_TABLES.items():
        members = data.get(table)
        if isinstance(members, dict):
            for name, member in members.items():
                _convert(member, schema, file, f"{table}.{name}")
    parsed = _convert(data, ConfigFile, file, "")
    return build(parsed, file, base_dir=path.resolve().parent, path=path.resolve())


def defaults_from_env() -> Config:
    providers: dict[str, ProviderConfig] = {}
    sources = {}
    for name, env_vars in ENV_PROVIDERS:
        for var in env_vars:
            if os.environ.get(var):
                providers[name] = ProviderConfig(api_key=os.environ[var])
                sources[name] = f"${var}"
                break
    if not providers and os.environ.get(NO_DISCOVERY_ENV_VAR) != "1":
        from gateway.discovery import OLLAMA_URL, ollama_models

        models = ollama_models()
        if models is not None:
            providers["ollama"] = ProviderConfig(type="openai", base_url=f"{OLLAMA_URL}/v1", models=models or None)
            sources["ollama"] = f"the Ollama server found at {OLLAMA_URL}"
    config = build(ConfigFile(providers=providers), "<embedded defaults>", base_dir=Path.cwd(), path=None)
    config.sources.update(sources)
    return config


# ----------------------------------------------------------------------------------------- interpolation

_VAR_RE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, file: str, key: str = "") -> Any:
    """Replace ${VAR} and ${VAR:-default} in every string; $$ is a literal $."""
    if isinstance(value, dict):
        return {k: interpolate(v, file, f"{key}.{k}" if key else k) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "$" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is not None:
            return found
        if default is not None:
            return default
        raise ConfigError(
            file, key, f"environment variable {name} is not set",
            f"export {name}=..., or give a default: ${{{name}:-value}}",
        )

    return _VAR_RE.sub(replace, value)


# ------------------------------------------------------------------------------------------- validation

def _convert(data: Any, schema: type[_T], file: str, prefix: str) -> _T:
    try:
        return msgspec.convert(data, schema)
    except msgspec.ValidationError as exc:
        raise _validation_error(file, str(exc), prefix, schema) from None


def _validation_error(file: str, text: str, prefix: str, schema: Any = None) -> ConfigError:
    problem = Problem(text, prefix)
    if problem.unknown:
        name = problem.unknown.rpartition(".")[2]
        return ConfigError(file, problem.unknown, f"unknown key '{name}'",
                           "check the spelling against config.example.toml")
    enum = _ENUM_VALUE.match(problem.message)
    allowed = _allowed_values(schema, problem.path[len(prefix):].lstrip(".")) if enum else None
    if enum and allowed:
        return ConfigError(file, problem.path or None, f"{enum.group(1)} is not one of: {', '.join(allowed)}",
                           "use one of the values listed")
    return ConfigError(file, problem.path or None, problem.message, "see config.example.toml for the expected type")


_ENUM_VALUE = re.compile(r"^Invalid enum value (.+)$")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _allowed_values(schema: Any, relative: str) -> list[str] | None:
    """The values a Literal field takes, found by walking ``schema`` along a key path (a.b[0].c)."""
    kind = schema
    for name, _index in _STEP.findall(relative):
        kind = _unwrap_optional(kind)
        if name and isinstance(kind, type) and issubclass(kind, msgspec.Struct):
            kind = next((f.type for f in msgspec.structs.fields(kind) if f.encode_name == name), None)
        elif typing.get_origin(kind) in (dict, list):
            kind = typing.get_args(kind)[-1]  # a table's member or a list's item
        else:
            return None
    kind = _unwrap_optional(kind)
    return [str(v) for v in typing.get_args(kind)] if typing.get_origin(kind) is Literal else None


def _unwrap_optional(kind: Any) -> Any:
    """``X | None`` -> ``X``; anything else as it is."""
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        members = [m for m in typing.get_args(kind) if m is not type(None)]
        if len(members) == 1:
            return members[0]
    return kind


# ------------------------------------------------------------------------------ every error at once
# The checks stop at the first mistake they meet. To report them all, the file is checked again without
# each mistake found so far: a wrong key (server.port = 70000) is dropped, so its default stands in;
# when that is not enough (a required key is missing), the item that holds it goes: a [[keys]] or
# [[models]] row, a routes/projects/limits.providers table, or, for providers.NAME, a valid stand-in under
# the same name, so that the routes and models naming the provider are not reported as well.

_ITEM_TABLES = ("limits.providers", "providers", "routes", "projects")
_ITEM_LISTS = ("keys", "models")
_STAND_IN_PROVIDER = {"type": "openai", "base_url": "http://stand-in.invalid/v1"}
_MAX_ERRORS = 100


def _load_reporting_all(raw: dict[str, Any], file: str, path: Path) -> Config:
    try:
        return _parse(raw, file, path)
    except ConfigError as exc:
        first = exc
    data = copy.deepcopy(raw)
    errors: dict[str, ConfigError] = {}
    dropped: set[str] = set()  # keys dropped so far, as named in the file
    dropped_rows: dict[str, list[int]] = {}  # list name -> original indexes dropped, to name later rows right
    tried: set[tuple[str | int, ...]] = set()
    error: ConfigError | None = first
    while error is not None and error.key is not None and len(errors) < _MAX_ERRORS:
        steps = _steps(data, error.key)
        original = _original_key(steps, dropped_rows)
        missing = _MISSING_FIELD.match(error.message)
        if not (missing and f"{original}.{missing.group(1)}" in dropped):  # not just the key dropped above
            errors.setdefault(original, _with_key(error, original))
        next_out = _target(data, steps, tried)
        if next_out is None:
            break
        target, whole_item = next_out
        tried.add(tuple(target))
        dropped.add(_original_key(target, dropped_rows))
        _drop(data, target, whole_item, dropped_rows)
        try:
            _parse(data, file, path)
            error = None
        except ConfigError as exc:
            error = exc
    if not errors:
        raise first
    order = _positions(raw)
    in_file_order = sorted(errors.items(), key=lambda item: _position(order, item[0]))
    raise ConfigErrors([e for _, e in in_file_order]) from None


_MISSING_FIELD = re.compile(r"^Object missing required field `([^`]+)`")


def _with_key(error: ConfigError, key: str) -> ConfigError:
    return error if error.key == key else ConfigError(error.file, key, error.message, error.hint)


def _target(data: dict[str, Any], steps: list[str | int],
            tried: set[tuple[str | int, ...]]) -> tuple[list[str | int], bool] | None:
    """What to take out of the file next, and whether it is the item holding the key at fault: the key
    itself if it is a table member not yet tried, else its item."""
    if steps and isinstance(steps[-1], str) and tuple(steps) not in tried and _has(data, steps):
        return steps, False
    item = _item(steps)
    if item is None and len(steps) == 2 and steps[0] in _ITEM_LISTS and isinstance(steps[1], int):
        item = steps  # the row itself is at fault (e.g. a model declared twice)
    if item is None or tuple(item) in tried or not _has(data, item):
        return None
    return item, True


def _steps(data: dict[str, Any], key: str) -> list[str | int]:
    """A key path as steps into the data: named tables matched against the names present (a provider name
    may hold dots), list indexes as ints."""
    steps: list[str | int] = []
    rest = key
    for table in _ITEM_TABLES:
        prefix = table + "."
        members = _get(data, table.split("."))
        if rest.startswith(prefix) and isinstance(members, dict):
            tail = rest[len(prefix):]
            name = max((n for n in members if tail == n or tail.startswith(n + ".") or tail.startswith(n + "[")),
                       key=len, default=None)
            if name is not None:
                steps = [*table.split("."), name]
                rest = tail[len(name):].lstrip(".")
                break
    for name, index in _STEP.findall(rest):
        steps.append(int(index) if index else name)
    return steps


def _item(steps: list[str | int]) -> list[str | int] | None:
    """The item holding a key: providers.NAME (and the like) or keys[i] / models[i]; None for a top-level
    table's own keys (server.port has no item but itself)."""
    for table in _ITEM_TABLES:
        head: list[str | int] = list(table.split("."))
        if steps[:len(head)] == head and len(steps) > len(head) + 1:
            return steps[:len(head) + 1]
    if len(steps) > 2 and steps[0] in _ITEM_LISTS and isinstance(steps[1], int):
        return steps[:2]
    return None


def _get(data: Any, steps: list[str] | list[str | int]) -> Any:
    for step in steps:
        in_table = isinstance(data, dict) and isinstance(step, str) and step in data
        in_list = isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data)
        if not (in_table or in_list):
            return None
        data = data[step]
    return data


def _has(data: Any, steps: list[str | int]) -> bool:
    parent = _get(data, steps[:-1])
    last = steps[-1] if steps else None
    return (isinstance(parent, dict) and last in parent) or (
        isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent))


def _drop(data: Any, steps: list[str | int], whole_item: bool, dropped_rows: dict[str, list[int]]) -> None:
    parent = _get(data, steps[:-1])
    last = steps[-1]
    if isinstance(parent, list) and isinstance(last, int):
        # Only whole [[keys]] / [[models]] rows leave a list: remember which, so later rows keep their
        # original index in the report.
        name = str(steps[0])
        dropped_rows.setdefault(name, []).append(_original_index(last, dropped_rows.get(name, [])))
        del parent[last]
    elif whole_item and steps[:1] == ["providers"] and isinstance(parent, dict):
        parent[last] = dict(_STAND_IN_PROVIDER)
    else:
        assert isinstance(parent, dict)
        del parent[last]


def _original_index(index: int, dropped: list[int]) -> int:
    for gone in sorted(dropped):
        if gone <= index:
            index += 1
    return index


def _original_key(steps: list[str | int], dropped_rows: dict[str, list[int]]) -> str:
    out = ""
    for i, step in enumerate(steps):
        if isinstance(step, int):
            if i == 1 and steps[0] in _ITEM_LISTS:
                step = _original_index(step, dropped_rows.get(str(steps[0]), []))
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out


def _positions(raw: Any, prefix: str = "", into: dict[str, int] | None = None) -> dict[str, int]:
    """Every key path of the file, numbered in file order."""
    order = into if into is not None else {}
    if isinstance(raw, dict):
        for name, value in raw.items():
            path = f"{prefix}.{name}" if prefix else str(name)
            order.setdefault(path, len(order))
            _positions(value, path, order)
    elif isinstance(raw, list):
        for i, value in enumerate(raw):
            path = f"{prefix}[{i}]"
            order.setdefault(path, len(order))
            _positions(value, path, order)
    return order


def _position(order: dict[str, int], key: str) -> int:
    """Where a key is in the file; a missing key sorts where the nearest table holding it is."""
    while key:
        if key in order:
            return order[key]
        key = key[:max(key.rfind("."), key.rfind("["), 0)]
    return len(order)


def _check_url(file: str, key: str, url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL is shown without the credentials it may carry (user info, a key= member): errors are logged.
        raise ConfigError(file, key, f"invalid URL {redact(url)!r}", "use an http:// or https:// URL with a host")
    return url.rstrip("/")


def _check_server(file: str, server: ServerConfig) -> None:
    if not 0 < server.port < 65536:
        raise ConfigError(file, "server.port", f"port {server.port} is out of range", "use 1-65535")
    if server.workers < 1:
        raise ConfigError(file, "server.workers", "must be at least 1", "one worker is the default")
    if server.max_body_mb <= 0:
        raise ConfigError(file, "server.max_body_mb", "must be positive", "the default is 32")
    if server.body_timeout_s <= 0:
        raise ConfigError(file, "server.body_timeout_s", "must be positive seconds", "the default is 30")
    if server.min_body_rate_kbps <= 0:
        raise ConfigError(file, "server.min_body_rate_kbps", "must be positive", "the default is 32 (kB/s)")


def limits_in_config(keys: list[KeyConfig], projects: dict[str, ProjectConfig], limits: LimitsConfig) -> str | None:
    """The first budget or rate limit the file sets (its key, e.g. ``keys[0].budget_usd``), or None."""
    for i, key in enumerate(keys):
        for name in ("budget_usd", "rpm", "tpm"):
            if getattr(key, name) is not None:
                return f"keys[{i}].{name}"
    for project_name, project in projects.items():
        if project.budget_usd is not None:
            return f"projects.{project_name}.budget_usd"
    for name in ("rpm", "tpm"):
        if getattr(limits, name) is not None:
            return f"limits.{name}"
    for provider, limit in limits.providers.items():
        for name in ("rpm", "tpm"):
            if getattr(limit, name) is not None:
                return f"limits.providers.{provider}.{name}"
    return None


def workers_refused(file: str, workers: int, limit: str, hint: str | None = None) -> ConfigError:
    """With [state] backend = "memory", budgets, rate limits and reservations live in each worker's memory: N
    workers would each admit the whole allowance (measured: $1.86 spent of $1, RPM 10 admitting 20), so more
    than one worker is refused whenever any limit exists."""
    return ConfigError(file, "server.workers",
                       f"{workers} workers cannot enforce {limit}: each worker counts budgets and rate limits on "
                       f"its own, so together they would allow {workers} times as much",
                       hint or f"set server.workers = 1 (or drop --workers), or remove {limit}")


def _check_workers(file: str, workers: int, keys: list[KeyConfig], projects: dict[str, ProjectConfig],
                   limits: LimitsConfig, state: StateConfig) -> None:
    if workers <= 1:
        return
    if state.backend == "redis":
        # Keys', projects' and the global limits are shared on Redis; per-provider buckets are checked for
        # each fallback target inside the pipeline and stay in each process (docs/scaling.md).
        limit = limits_in_config([], {}, LimitsConfig(providers=limits.providers))
        if limit is not None:
            raise workers_refused(file, workers, limit, f"remove {limit}: per-provider limits are counted by "
                                  "each process even with [state] backend = \"redis\"")
        return
    limit = limits_in_config(keys, projects, limits)
    if limit is not None:
        raise workers_refused(file, workers, limit, f"set [state] backend = \"redis\" to share limits between "
                              f"workers, or set server.workers = 1 (or drop --workers), or remove {limit}")


def _check_state(file: str, state: StateConfig) -> None:
    if state.backend == "redis":
        url = state.redis_url or ""
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(file, "state.redis_url", f"{redact(url)!r} is not a Redis URL" if url else
                              'backend = "redis" needs redis_url', "e.g. redis_url = \"${REDIS_URL}\" with "
                              "REDIS_URL=redis://127.0.0.1:6379/0")
        if importlib.util.find_spec("redis") is None:
            raise ConfigError(file, "state.backend", "the Redis client is not installed",
                              "install it: pip install 'gateway[redis]'")
    if not state.hold_ttl_s > 0:
        raise ConfigError(file, "state.hold_ttl_s", "must be positive seconds", "the default is 30")


def _check_store(file: str, store: StoreConfig) -> None:
    if store.backend == "postgres":
        url = store.postgres_url or ""
        if not url.startswith(("postgres://", "postgresql://")):
            raise ConfigError(file, "store.postgres_url", "must start with postgres:// or postgresql://" if url
                              else 'backend = "postgres" needs postgres_url', "e.g. postgres_url = \"${DATABASE_URL}\" "
                              "with DATABASE_URL=postgres://gateway:secret@127.0.0.1:5432/gateway")


def build(parsed: ConfigFile, file: str, *, base_dir: Path, path: Path | None) -> Config:
    server = parsed.server
    _check_server(file, server)
    if server.max_upstream_body_mb <= 0:
        raise ConfigError(file, "server.max_upstream_body_mb", "must be positive", "the default is 64")
    providers: dict[str, Provider] = {}
    seen_lower: dict[str, str] = {}
    for name, spec in parsed.providers.items():
        key = f"providers.{name}"
        if not _NAME_RE.match(name):
            raise ConfigError(file, key, f"invalid provider name {name!r}",
                              "use letters, digits, '.', '_' or '-' (no '/': it separates provider/model)")
        if name.lower() in seen_lower:
            raise ConfigError(file, key, f"duplicate provider name (also '{seen_lower[name.lower()]}')",
                              "provider names are case-insensitive; rename one")
        seen_lower[name.lower()] = name
        kind = spec.type or (WELL_KNOWN[name][0] if name in WELL_KNOWN else None)
        if kind is None:
            raise ConfigError(file, f"{key}.type", "missing provider type",
                              'set type = "openai" (any OpenAI-compatible server), "anthropic" or "gemini"')
        base_url = spec.base_url
        if base_url is None:
            if name not in WELL_KNOWN:
                raise ConfigError(file, f"{key}.base_url", "missing base_url",
                                  "give the server's URL, e.g. https://api.groq.com/openai/v1")
            base_url = DEFAULT_BASE_URL_BY_KIND[kind]
        base_url = _check_url(file, f"{key}.base_url", base_url)
        if spec.timeout <= 0 or spec.connect_timeout <= 0:
            raise ConfigError(file, f"{key}.timeout", "timeouts must be positive seconds",
                              "defaults: connect_timeout = 10, timeout = 600")
        responses = spec.responses if spec.responses is not None else (
            kind == "openai" and base_url == DEFAULT_BASE_URL_BY_KIND["openai"])
        if responses and kind != "openai":
            raise ConfigError(file, f"{key}.responses", "only an OpenAI-compatible provider serves the Responses API",
                              "remove the key: this provider's requests are translated")
        models: tuple[str, ...] | None = None
        if spec.models is not None:
            dupes = {m for m in spec.models if spec.models.count(m) > 1}
            if dupes:
                raise ConfigError(file, f"{key}.models", f"duplicate model {sorted(dupes)[0]!r}",
                                  "list each model once")
            if any(not m for m in spec.models):
                raise ConfigError(file, f"{key}.models", "empty model name", "remove the empty string")
            models = tuple(spec.models)
        providers[name] = Provider(
            name=name, kind=kind, base_url=base_url, api_key=spec.api_key, models=models,
            connect_timeout=spec.connect_timeout, timeout=spec.timeout, headers=dict(spec.headers),
            stream_usage=spec.stream_usage, responses=responses,
            native_paths=_check_native_paths(file, f"{key}.native_paths", spec.native_paths),
        )
    _check_routing(file, parsed.routing)
    _check_routes(file, parsed.routes, providers)
    _check_models(file, parsed.models, providers)
    data_dir = Path(server.data_dir).expanduser()
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    _check_keys(file, parsed.keys)
    _check_governance(file, parsed)
    _check_state(file, parsed.state)
    _check_store(file, parsed.store)
    _check_workers(file, server.workers, parsed.keys, parsed.projects, parsed.limits, parsed.state)
    return Config(server=server, providers=providers, data_dir=data_dir, path=path, routing=parsed.routing,
                  routes=parsed.routes, models=parsed.models, keys=parsed.keys, projects=parsed.projects,
                  limits=parsed.limits, usage=parsed.usage,
                  # An empty token (e.g. "${GATEWAY_ADMIN_TOKEN:-}" with the variable unset) means none.
                  admin=AdminConfig(token=parsed.admin.token or None), logging=parsed.logging,
                  state=parsed.state, store=parsed.store,
                  metrics=MetricsConfig(enabled=parsed.metrics.enabled, token=parsed.metrics.token or None),
                  tracing=parsed.tracing)


def parse_expiry(value: str) -> float:
    """YYYY-MM-DD -> the UTC timestamp of the start of that day (the key works until then)."""
    day = datetime.date.fromisoformat(value)
    return datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC).timestamp()


def _check_keys(file: str, keys: list[KeyConfig]) -> None:
    names: set[str] = set()
    secrets: set[str] = set()
    for i, key in enumerate(keys):
        where = f"keys[{i}]"
        if not key.name.strip():
            raise ConfigError(file, f"{where}.name", "a key needs a name", 'e.g. name = "ci"')
        if key.name in names:
            raise ConfigError(file, f"{where}.name", f"duplicate key name {key.name!r}", "names are unique")
        names.add(key.name)
        if len(key.key) < 20:
            raise ConfigError(file, f"{where}.key", "the key is too short (at least 20 characters)",
                              "generate one with: python3 -c 'import secrets; print(\"sk-proxy-\" + "
                              "secrets.token_urlsafe(32))'")
        if key.key in secrets:
            raise ConfigError(file, f"{where}.key", "two keys have the same secret", "give each key its own")
        secrets.add(key.key)
        _check_limits(file, where, key.budget_usd, key.rpm, key.tpm)
        _check_native_paths(file, f"{where}.native_paths", key.native_paths)
        if key.expires is not None:
            try:
                parse_expiry(key.expires)
            except ValueError:
                raise ConfigError(file, f"{where}.expires", f"invalid date {key.expires!r}",
                                  'use YYYY-MM-DD, e.g. expires = "2027-01-31"') from None


_NATIVE_PATH_RE = re.compile(r"^(GET|POST|PUT|PATCH|DELETE|\*) /\S*$")


def _check_native_paths(file: str, key: str, patterns: list[str]) -> tuple[str, ...]:
    for pattern in patterns:
        if not _NATIVE_PATH_RE.match(pattern):
            raise ConfigError(file, key, f"invalid pattern {pattern!r}",
                              'write "METHOD /path", METHOD one of GET, POST, PUT, PATCH, DELETE or *, e.g. '
                              '"GET /v1/files/*" (* stays within one path segment, ** crosses them)')
    return tuple(patterns)


def _check_limits(file: str, where: str, budget: float | None, rpm: int | None, tpm: int | None) -> None:
    if budget is not None and budget < 0:
        raise ConfigError(file, f"{where}.budget_usd", "must not be negative", "0 blocks every priced request")
    for name, value in (("rpm", rpm), ("tpm", tpm)):
        if value is not None and value <= 0:
            raise ConfigError(file, f"{where}.{name}", "must be a positive number", "leave it out for no limit")


def _check_governance(file: str, parsed: ConfigFile) -> None:
    for name, project in parsed.projects.items():
        _check_limits(file, f"projects.{name}", project.budget_usd, None, None)
    _check_limits(file, "limits", None, parsed.limits.rpm, parsed.limits.tpm)
    for name, limit in parsed.limits.providers.items():
        if name not in parsed.providers:
            raise ConfigError(file, f"limits.providers.{name}", f"unknown provider {name!r}",
                              "limits.providers.NAME must name a configured provider")
        _check_limits(file, f"limits.providers.{name}", None, limit.rpm, limit.tpm)
    usage = parsed.usage
    if usage.retention_days <= 0 or usage.queue_size < 1 or usage.batch_size < 1 or usage.flush_interval_ms <= 0:
        raise ConfigError(file, "usage", "retention_days, queue_size, batch_size and flush_interval_ms must be "
                          "positive", "see config.example.toml for the defaults")
    if parsed.tracing.enabled and not _installed("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
        raise ConfigError(file, "tracing.enabled", "tracing needs the OpenTelemetry SDK and its OTLP/HTTP exporter",
                          "install the gateway's otel extra: pip install 'gateway[otel]'")
    for name, token in (("admin.token", parsed.admin.token), ("metrics.token", parsed.metrics.token)):
        if token and len(token) < 16:
            raise ConfigError(file, name, f"the {name.split('.')[0]} token is too short (at least 16 characters)",
                              "use a long random string, e.g. from: openssl rand -hex 24")


def _installed(*modules: str) -> bool:
    try:
        return all(importlib.util.find_spec(module) is not None for module in modules)
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _check_routing(file: str, routing: RoutingConfig) -> None:
    for name in ("retries", "circuit_failures", "circuit_min_requests"):
        if getattr(routing, name) < 0:
            raise ConfigError(file, f"routing.{name}", "must not be negative", "0 turns it off")
    for name in ("backoff_initial_ms", "backoff_max_ms", "retry_after_max_s", "circuit_window_s",
                 "circuit_cooldown_s", "reload_interval_s"):
        if getattr(routing, name) <= 0:
            raise ConfigError(file, f"routing.{name}", "must be positive", "see config.example.toml for defaults")
    if not 0 < routing.circuit_error_rate <= 1:
        raise ConfigError(file, "routing.circuit_error_rate", "must be in (0, 1]", "0.5 opens at 50% errors")


def _check_routes(file: str, routes: dict[str, RouteConfig], providers: dict[str, Provider]) -> None:
    for name, route in routes.items():
        key = f"routes.{name}"
        if "/" in name or not _NAME_RE.match(name):
            raise ConfigError(file, key, f"invalid group name {name!r}",
                              "use letters, digits, '.', '_' or '-' (no '/': that would read as provider/model)")
        if name in providers:
            raise ConfigError(file, key, f"group name {name!r} is also a provider name", "rename the group")
        if not route.targets:
            raise ConfigError(file, f"{key}.targets", "a group needs at least one target",
                              'e.g. targets = ["openai/gpt-4o", "anthropic/claude-sonnet-4-6"]')
        for i, target in enumerate(route.targets):
            provider, sep, model = target.partition("/")
            wildcard = name == "auto" and any(ch in target for ch in "*?[")
            if not sep or not model:
                raise ConfigError(file, f"{key}.targets[{i}]", f"target {target!r} is not 'provider/model'",
                                  "name each target as provider/model")
            if provider not in providers and not wildcard:
                raise ConfigError(file, f"{key}.targets[{i}]", f"unknown provider {provider!r}",
                                  f"configured providers: {', '.join(sorted(providers)) or 'none'}")
        if route.weights is not None:
            if len(route.weights) != len(route.targets):
                raise ConfigError(file, f"{key}.weights", "needs one weight per target",
                                  f"{len(route.targets)} targets, {len(route.weights)} weights")
            if any(w <= 0 for w in route.weights):
                raise ConfigError(file, f"{key}.weights", "weights must be positive", "e.g. weights = [3, 1]")


def _check_models(file: str, models: list[ModelConfig], providers: dict[str, Provider]) -> None:
    seen: set[tuple[str, str]] = set()
    for i, model in enumerate(models):
        key = f"models[{i}]"
        if not model.name or "/" in model.name:
            raise ConfigError(file, f"{key}.name", f"invalid model name {model.name!r}",
                              "a plain name, without 'provider/'")
        if model.provider not in providers:
            raise ConfigError(file, f"{key}.provider", f"unknown provider {model.provider!r}",
                              f"configured providers: {', '.join(sorted(providers)) or 'none'}")
        if (model.name, model.provider) in seen:
            raise ConfigError(file, key, f"model {model.name!r} of {model.provider!r} is declared twice",
                              "merge the two entries")
        seen.add((model.name, model.provider))


SERVE_FLAGS_ENV_VAR = "GATEWAY_SERVE_FLAGS"


class ServeFlags(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """``gateway serve --host/--port/--workers``: handed to the workers, which load the file themselves,
    through the environment (SERVE_FLAGS_ENV_VAR), and applied again on every reload."""

    host: str | None = None
    port: int | None = None
    workers: int | None = None

    def apply(self, config: Config) -> Config:
        return with_overrides(config, host=self.host, port=self.port, workers=self.workers)


def with_overrides(config: Config, *, host: str | None = None, port: int | None = None,
                   workers: int | None = None) -> Config:
    """Apply CLI flags over the file, checked as the file's values are (ConfigError naming the flag)."""
    server = msgspec.structs.replace(
        config.server,
        host=host if host is not None else config.server.host,
        port=port if port is not None else config.server.port,
        workers=workers if workers is not None else config.server.workers,
    )
    flags = " ".join(f"--{name} {value}" for name, value in (("host", host), ("port", port), ("workers", workers))
                     if value is not None)
    _check_server(f"the command line ({flags})", server)
    _check_workers(f"the command line ({flags})", server.workers, config.keys, config.projects, config.limits,
                   config.state)
    return dataclasses.replace(config, server=server)
