#!/usr/bin/env bash
# Build dist/gateway (one file) from a clean checkout, then run the fresh binary's smoke test.
# PYTHON is the interpreter that has the gateway's dependencies (tests pass their own, a venv's python);
# PyInstaller comes with the test extra, else it is installed into that interpreter's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import PyInstaller' 2>/dev/null \
    || python3 -m pip --python "$PYTHON" install -q 'pyinstaller>=6.10,<7'
"$PYTHON" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/gateway.spec
ls -l dist/gateway
"$PYTHON" packaging/smoke.py dist/gateway
