#!/usr/bin/env bash
# Lint, type-check and unit-test the Python client, from a fresh clone or CI.
#
#   clients/python/check.sh
#
# Installs the pinned tools of requirements-dev.txt into a virtual environment (.venv here, or
# $SLUICE_PY_VENV), so nothing lands in the machine's own Python; the unit tests import the
# package from src/ (pyproject.toml's pytest pythonpath), so no build is needed.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-python3}
venv=${SLUICE_PY_VENV:-.venv}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt

"$venv/bin/ruff" check src tests bench ../../examples/micro-apps/python
"$venv/bin/ruff" format --check src tests bench ../../examples/micro-apps/python
"$venv/bin/mypy" --strict src tests/unit
"$venv/bin/python" -m pytest -q tests/unit
