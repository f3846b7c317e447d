"""`gateway init`: a commented config.toml written from the shipped example, and a first key.

The written file is valid as it stands: the ``[server]`` table and one table for each provider whose
key is in the environment are active; every other option of the example is there, commented out, to
be switched on by removing the ``#``.
"""

from __future__ import annotations

import os
from importlib.resources import files

from gateway.config import ENV_PROVIDERS


def example_text() -> str:
    return files("gateway").joinpath("data", "config.example.toml").read_text(encoding="utf-8")


def render(example: str, environ: dict[str, str] | os._Environ[str]) -> str:
    """The example with [server] active, detected providers active, and the rest commented out."""
    out: list[str] = []
    active = False
    for line in example.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            active = stripped == "[server]"
        if active or not stripped or stripped.startswith("#"):
            out.append(line)
        else:
            out.append("# " + line)
    enabled = []
    for name, env_vars in ENV_PROVIDERS:
        var = next((v for v in env_vars if environ.get(v)), None)
        if var is not None:
            enabled.append(f'[providers.{name}]\napi_key = "${{{var}}}"\n')
    if enabled:
        header = "# Providers found in the environment when `gateway init` ran:\n"
        out.insert(_after_server(out), "\n" + header + "\n".join(enabled))
    return "\n".join(out) + "\n"


def _after_server(lines: list[str]) -> int:
    """The index just past the [server] table."""
    inside = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == "[server]":
            inside = True
        elif inside and stripped.startswith(("[", "# [")):
            return i
    return len(lines)
