"""The packaged single-file binary, built from this checkout and smoke-tested like a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import gateway_env

ROOT = Path(__file__).resolve().parent.parent
BINARY = ROOT / "dist" / "gateway"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def binary() -> Path:
    """packaging/build.sh builds dist/gateway with this interpreter's packages and runs its smoke test
    (chat plain and streamed through a fake upstream, keys made by the binary's own CLI, the admin page's
    files, a stop on SIGTERM with every usage record written)."""
    result = subprocess.run(["bash", str(ROOT / "packaging" / "build.sh")], capture_output=True, text=True,
                            timeout=900, cwd=ROOT, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "smoke: ok" in result.stdout
    return BINARY


def test_binary_size_and_version(binary: Path) -> None:
    # A guard against gross growth only: the target (25 MB) and the measured size are bench figures.
    assert binary.stat().st_size <= 40 * 1024 * 1024
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("gateway ")


def test_config_errors_read_the_same_as_from_source(binary: Path, tmp_path: Path) -> None:
    bad = tmp_path / "config.toml"
    bad.write_text('[providers.groq]\ntype = "openai"\nbase_url = "https://x/v1"\napi_key = "${NOT_SET_ANYWHERE}"\n')
    frozen = subprocess.run([str(binary), "check-config", "--config", str(bad)], capture_output=True, text=True,
                            env=gateway_env())
    source = subprocess.run([sys.executable, "-m", "gateway", "check-config", "--config", str(bad)],
                            capture_output=True, text=True, env=gateway_env())
    assert frozen.returncode == source.returncode == 2
    assert frozen.stderr == source.stderr and "providers.groq.api_key" in frozen.stderr


def test_help_lists_every_command(binary: Path) -> None:
    text = subprocess.run([str(binary), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("serve", "init", "check-config", "keys", "usage"):
        assert command in text


def test_init_writes_a_valid_config_and_a_first_key(binary: Path, tmp_path: Path) -> None:
    env = {**gateway_env(), "OPENAI_API_KEY": "sk-test"}
    made = subprocess.run([str(binary), "init", "--config", str(tmp_path / "config.toml")], capture_output=True,
                          text=True, env=env, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("sk-proxy-")
    checked = subprocess.run([str(binary), "check-config", "--config", str(tmp_path / "config.toml")],
                             capture_output=True, text=True, env=env)
    assert checked.returncode == 0 and "openai (openai)" in checked.stdout


def test_the_bundle_leaves_out_what_the_gateway_never_imports(binary: Path) -> None:
    """Litestar's optional extras (faker, polyfactory, rich, ...) are installed with it but never imported
    by the gateway: each one bundled is unpacked again at every start of the executable."""
    from PyInstaller.archive.readers import CArchiveReader

    bundle = CArchiveReader(str(binary))
    modules = set(bundle.open_embedded_archive("PYZ.pyz").toc)
    packages = {name.split(".")[0] for name in modules} | {name.split("/")[0] for name in bundle.toc}
    never = {"faker", "polyfactory", "rich", "rich_click", "click", "pygments", "cryptography", "pydantic_core",
             "trio", "_pytest", "unittest"}
    assert not packages & never, sorted(packages & never)
    # What the gateway does import is there (its files found the same way as in a wheel: gateway/web).
    assert {"gateway.app", "gateway.assets", "litestar.app", "granian.server"} <= modules
    assert {"gateway/web/templates/base.html", "gateway/web/static/admin.css",
            "gateway/data/catalog.toml", "gateway/data/config.example.toml"} <= set(bundle.toc)
