"""The front door: the README's set-up commands as CI runs them, the admin page's files found in every
layout the gateway runs from, and ``python -m gateway`` behaving as the ``gateway`` command does."""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.conftest import gateway_env, wait_ready
from tests.fakes import free_port
from tests.test_docs import shell_blocks

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CI = (ROOT / ".ci" / "run").read_text()
SCRIPT = Path(sys.executable).parent / "gateway"

# `python -S` with the dependencies' folder on PYTHONPATH: the gateway's dependencies, without the .pth
# files that make the development checkout importable from anywhere (an editable install). That is how a
# clone runs when it is not installed, or when the installed copy is shadowed by the clone (`-m` and `-c`
# put the current folder first on sys.path).
SITE = [p for p in site.getsitepackages() if Path(p, "msgspec").is_dir()]

# Where the admin files were found, the static files read, the start of the base template, and the data
# files (the example config `gateway init` writes, the model catalog).
WHERE = ("import json, gateway.admin.web as w, gateway.init as i, gateway.catalog as c; env = w.environment(); "
         "print(json.dumps([str(w.WEB), sorted(w.static_files()), env.loader.get_source(env, 'base.html')[0], "
         "i.example_text(), len(c.load_builtin().models)]))")


def _copy_sources(into: Path) -> Path:
    """What a wheel is built from (pyproject, package, web/, the example config), symlinks kept as links."""
    for name in ("pyproject.toml", "README.md", "config.example.toml"):
        shutil.copy2(ROOT / name, into / name)
    for name in ("gateway", "web"):
        shutil.copytree(ROOT / name, into / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return into


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from this checkout with the same backend pip uses for `pip install .`."""
    source = _copy_sources(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("wheel")
    build = f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"
    built = subprocess.run([sys.executable, "-c", build], cwd=source, capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-3000:]
    return out / built.stdout.split()[-1]


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked as pip lays it out in site-packages."""
    target = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)
    return target


def _isolated(pythonpath: list[Path], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = gateway_env(PYTHONPATH=":".join(str(p) for p in [*pythonpath, *SITE]))
    return subprocess.run([sys.executable, "-S", *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60)


def test_the_wheel_carries_the_admin_files_and_the_data_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        example = archive.read("gateway/data/config.example.toml")
    for name in ("gateway/web/templates/base.html", "gateway/web/templates/login.html",
                 "gateway/web/static/admin.css", "gateway/web/static/admin.js", "gateway/data/catalog.toml"):
        assert name in names, name
    # The example config is a symlink in the repository: the wheel carries the file it points to.
    assert example == (ROOT / "config.example.toml").read_bytes()


@pytest.mark.parametrize(("layout", "on_path", "run_in", "web"), [
    ("clone, nothing installed", [], "clone", "clone/web"),
    ("installed wheel, run from a clone: the clone shadows it", ["wheel"], "clone", "clone/web"),
    ("installed wheel, run from anywhere", ["wheel"], "elsewhere", "wheel/gateway/web"),
])
def test_the_admin_files_are_found_in_every_layout(layout: str, on_path: list[str], run_in: str, web: str,
                                                    installed: Path, tmp_path: Path) -> None:
    places = {"clone": ROOT, "wheel": installed, "elsewhere": tmp_path}
    found = _isolated([places[p] for p in on_path], "-c", WHERE, cwd=places[run_in])
    assert found.returncode == 0, found.stderr[-3000:]
    where, static, page, example, models = json.loads(found.stdout)
    base, _, rest = web.partition("/")
    assert Path(where) == places[base] / rest, layout
    assert {"admin.css", "admin.js"} <= set(static) and page.startswith("<!doctype html>"), page[:100]
    assert example == (ROOT / "config.example.toml").read_text() and models > 10


def test_the_admin_files_are_found_from_an_editable_install_in_any_folder(tmp_path: Path) -> None:
    found = subprocess.run([sys.executable, "-c", WHERE], capture_output=True, text=True, cwd=tmp_path,
                           env=gateway_env(), timeout=60)
    assert found.returncode == 0, found.stderr[-3000:]
    assert Path(json.loads(found.stdout)[0]) == ROOT / "web"


def test_python_m_gateway_serve_from_a_clone_serves_the_admin_page(tmp_path: Path) -> None:
    """The reported crash: `python3 -m gateway serve` from the clone's root, the source package shadowing
    the installed one, died at start with `No module named 'gateway.web'`."""
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "data"}"\n')
    port = free_port()
    env = gateway_env(PYTHONPATH=":".join(SITE))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-S", "-m", "gateway", "serve", "--config", str(config),
                                 "--port", str(port)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(base, proc)
        except RuntimeError:
            pytest.fail(log.read_text()[-3000:])
        login = httpx.get(f"{base}/admin/login", timeout=10)
        css = httpx.get(f"{base}/admin/static/admin.css", timeout=10)
    finally:
        proc.terminate()
        proc.wait(15)
    assert login.status_code == 200 and "<form" in login.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def _said(run: subprocess.CompletedProcess[str], program: str) -> tuple[int, str, str]:
    """What a run said, with the command's name as typed (which hints and usage lines repeat, so they can be
    pasted back) read as `gateway`, and line wrapping (which depends on that name's length) ignored."""
    out, err = (" ".join(text.replace(program, "gateway").split()) for text in (run.stdout, run.stderr))
    return run.returncode, out, err


@pytest.mark.parametrize("args", [["--version"], ["--help"], ["keys", "--help"], ["check-config", "--config", "BAD"],
                                  ["keys", "nonsense"], ["usage", "--since", "yesterday"]])
def test_python_m_gateway_and_the_gateway_command_behave_the_same_from_any_folder(args: list[str],
                                                                                    tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nport = "eighty"\n')
    args = [str(bad) if arg == "BAD" else arg for arg in args]
    env = gateway_env(PATH=f"{SCRIPT.parent}:{gateway_env()['PATH']}")
    module = f"{Path(sys.executable).name} -m gateway"
    commands = (([sys.executable, "-m", "gateway", *args], module), (["gateway", *args], "gateway"))
    said = [_said(subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=60), program)
            for command, program in commands for cwd in (tmp_path, ROOT)]
    assert said[0][1] or said[0][2]
    assert said == [said[0]] * len(said), args


def test_the_parser_imports_nothing_only_some_commands_need() -> None:
    """Every run builds the whole parser (`--version` included), and the single executable pays for each
    import again at every start: the store, the key operations, the server and the app are imported by the
    commands that use them."""
    probe = ("import sys, gateway.__main__ as cli; cli._parser().parse_args([]); "
             "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {'asyncio', 'aiosqlite', "
             "'litestar', 'granian', 'aiohttp'} or m in {'gateway.store', 'gateway.keys', 'gateway.app'})))")
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert found.returncode == 0 and found.stdout.split() == [], found.stdout[:500] + found.stderr


# ---------------------------------------------------------------------------------------- README and CI


def test_the_readme_opens_with_two_one_line_setup_commands() -> None:
    first, second = shell_blocks(README)[:2]
    assert "\n" not in first and "\n" not in second
    # The first makes a venv, installs the package (not editable) into it and serves on embedded defaults.
    assert "python3 -m venv" in first and "install pip . " in first and "-e" not in first.split()
    assert first.endswith("gateway serve")
    # The second installs the test extra (so every test dependency) and runs the tests.
    assert "'.[test]'" in second and second.endswith("pytest -q")


def test_ci_runs_the_readme_commands_read_from_the_readme() -> None:
    """.ci/run holds no copy of the commands: it reads them from README.md, so README and CI cannot drift."""
    first, second = shell_blocks(README)[:2]
    assert first not in CI and second not in CI
    assert "README.md" in CI and "git clone" in CI and "/readyz" in CI
    # The helper .ci/run uses to read them prints exactly the README's two blocks.
    printed = subprocess.run(["bash", "-c", f"source <(sed -n '/^readme_command()/,/^}}/p' {ROOT / '.ci' / 'run'})"
                              f" && readme_command 1 {ROOT / 'README.md'} && readme_command 2 {ROOT / 'README.md'}"],
                             capture_output=True, text=True, timeout=30)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.splitlines() == [first, second]
