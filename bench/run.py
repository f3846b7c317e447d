"""``python -m bench``: start the mock, the floor and the gateway, run the scenarios, write the results.

Writes ``bench/results/<date>-<sha>.json`` (raw figures and the machine) and ``.md`` (the tables); a
full run (no ``--quick``, no ``--only``) also rewrites docs/benchmarks.md. Prints ``N passed, N failed``
for the regression guards and exits 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py`: make the repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import drivers, report, servers
from bench.litellm import start_litellm
from bench.procs import layout, quiet_gc, tree_rss_mb
from bench.scenarios import QUICK_SKIPS, SCENARIOS, Check, Options, Run, versus_litellm

REPO = servers.REPO


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmark the gateway (loopback only).")
    parser.add_argument("--quick", action="store_true",
                        help="CI guard: short runs, Python drivers only, fail on gross regressions")
    parser.add_argument("--with-litellm", action="store_true",
                        help="also run LiteLLM's proxy (installed into bench/.venv-litellm on first use)")
    parser.add_argument("--only", action="append", metavar="SCENARIO", choices=sorted(SCENARIOS),
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIOS)}")
    parser.add_argument("--soak-seconds", type=float, default=None,
                        help="length of the memory soak (default 300; 0 in --quick, which skips it)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results", help="folder for JSON and markdown")
    parser.add_argument("--binary", nargs="?", const=REPO / "dist" / "gateway", type=Path, metavar="PATH",
                        help="measure only the single executable (default dist/gateway, built by "
                             "packaging/build.sh) beside the Python install, and write its section of "
                             "docs/benchmarks.md")
    parser.add_argument("--gateway-src", type=Path, default=REPO,
                        help="folder whose gateway package is measured (default: this repo; e.g. a "
                             "`git archive` export of another commit)")
    return parser.parse_args(argv)


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO, check=False)
    return done.stdout.strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _wrk_version() -> str | None:
    if not drivers.wrk_available():
        return None
    done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).split("[")[0].replace("wrk", "").strip() or "unknown"


def machine_meta(args: argparse.Namespace, use_wrk: bool, lay_text: str) -> dict[str, Any]:
    packages = {}
    for name in ("granian", "aiohttp", "litestar", "msgspec"):
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = "absent"
    if use_wrk:
        packages["wrk"] = _wrk_version() or "absent"
    src = args.gateway_src.resolve()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "git_sha": _git("rev-parse", "HEAD") or "unknown",
        "git_dirty": bool(_git("status", "--porcelain", "--", "gateway")),
        "gateway_src": "." if src == REPO else str(src),
        "cpu_model": _cpu_model(), "cpus": os.cpu_count(), "kernel": platform.release(),
        "python": platform.python_version(), "packages": packages, "layout": lay_text,
        "quick": args.quick, "with_litellm": args.with_litellm, "only": args.only,
    }


def selected(args: argparse.Namespace) -> list[str]:
    if args.only:
        return [name for name in SCENARIOS if name in args.only]
    return [name for name in SCENARIOS if not (args.quick and name in QUICK_SKIPS)]


def _clean(value: Any) -> Any:
    """NaN is not JSON: written as null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.binary:
        from bench.binary import main as binary_main

        return binary_main(args.binary, runs=5)
    soak = args.soak_seconds if args.soak_seconds is not None else (0.0 if args.quick else 300.0)
    lay = layout()
    os.sched_setaffinity(0, lay.client)  # this process is the load generator: it shares the mock's CPU
    quiet_gc()
    use_wrk = drivers.wrk_available() and not args.quick
    began = time.perf_counter()
    load_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    # Measure one version throughout: a copy taken now, whatever is edited in the tree meanwhile.
    snapshot = workdir / "src"
    source = args.gateway_src.resolve()
    shutil.copytree(source / "gateway", snapshot / "gateway", ignore=shutil.ignore_patterns("__pycache__"))
    if (source / "web").is_dir():  # installed as gateway.web (pyproject's package-dir): same place here
        shutil.copytree(source / "web", snapshot / "gateway" / "web", ignore=shutil.ignore_patterns("__pycache__"))
    opts = Options(quick=args.quick, with_litellm=args.with_litellm, soak_seconds=soak, gateway_src=snapshot)
    started: list[servers.Server] = []
    figures: dict[str, Any] = {}
    checks: list[Check] = []
    try:
        mock = servers.start_mock(workdir, lay)
        started.append(mock)
        floor = servers.start_floor(workdir, lay, mock)
        started.append(floor)
        config, port = servers.write_gateway_config(workdir / "gateway", mock)
        key = servers.create_key(opts.gateway_src, config)
        gateway = servers.start_gateway(opts.gateway_src, config, port, key, lay.server)
        started.append(gateway)
        litellm = None
        if args.with_litellm:
            print("starting LiteLLM (installs into bench/.venv-litellm on first use)…", flush=True)
            litellm = start_litellm(workdir, lay, mock)
            started.append(litellm)
            time.sleep(1.0)
            figures["litellm_idle_rss_mb"] = round(tree_rss_mb(litellm.proc.pid), 1)
        run = Run(opts=opts, layout=lay, workdir=workdir, mock=mock, floor=floor, gateway=gateway,
                  litellm=litellm, use_wrk=use_wrk, figures=figures, checks=checks)
        print(f"layout: {lay.describe()}; driver: {'wrk' if use_wrk else 'python'}; work dir {workdir}", flush=True)
        for name in selected(args):
            t0 = time.perf_counter()
            print(f"== {name} …", end=" ", flush=True)
            try:
                SCENARIOS[name](run)
            except Exception as exc:  # one broken scenario is reported and failed, the others still run
                traceback.print_exc()
                figures[name] = {"error": repr(exc)}
                checks.append(Check(name, "ran to the end", None, "", "no error", False, guard=True))
            if not gateway.proc.alive():
                checks.append(Check(name, "gateway still running", None, "", "alive", False, guard=True))
                print(f"\ngateway died:\n{gateway.proc.log_tail()}")
                break
            print(f"{time.perf_counter() - t0:.0f} s", flush=True)
        versus_litellm(run)
    finally:
        for server in reversed(started):
            server.proc.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    meta = machine_meta(args, use_wrk, lay.describe())
    meta["duration_s"] = round(time.perf_counter() - began, 1)
    # Anything else running on a 2-CPU machine lands on the measured cores: recorded so a noisy run shows.
    meta["loadavg_1m"] = {"start": round(load_start, 2), "end": round(os.getloadavg()[0], 2)}
    md = report.markdown(meta, figures, checks)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{meta['git_sha'][:8]}{'-quick' if args.quick else ''}"
    payload = {"meta": meta, "figures": figures, "checks": [c.__dict__ for c in checks]}
    (args.out / f"{stem}.json").write_text(json.dumps(_clean(payload), indent=1) + "\n")
    (args.out / f"{stem}.md").write_text(md)
    if not args.quick and not args.only:
        report.write_docs(REPO / "docs" / "benchmarks.md", md)
    print("\n" + md)
    print(f"results: {args.out / stem}.json")
    guards = [c for c in checks if c.guard]
    failed = sum(1 for c in guards if not c.met)
    print(f"{len(guards) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
