#!/usr/bin/env bash
# Build dist/gateway (one file) from a clean checkout, then run the fresh binary's smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q 'pyinstaller>=6.10,<7'
python3 -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist --workpath build/pyinstaller \
    packaging/gateway.spec
ls -l dist/gateway
python3 packaging/smoke.py dist/gateway
