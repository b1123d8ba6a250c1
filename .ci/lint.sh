#!/usr/bin/env bash
# The two structural checks of the test command, before pytest (configured in pyproject.toml):
#   ruff SLF001: no module touches another object's _private members (tests excepted);
#   import-linter: dependencies point one way, ingest -> backbone -> memory -> eval -> app, imports
#   inside functions included. It reads the installed layout (longwatch.app, ...), which only a built
#   wheel has (the checkout's folders are mapped by setuptools), so the wheel is built and unpacked first.
# Usage: lint.sh [VENV]   (default .venv, which has the [test] extra)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$(cd "${1:-$root/.venv}" && pwd)   # absolute: lint-imports runs from another directory below
cd "$root"
status=0
"$venv/bin/ruff" check --quiet --output-format concise . || status=1
work=$(mktemp -d /tmp/longwatch-lint.XXXXXX)
trap 'rm -rf "$work"' EXIT
wheel=$(bash .ci/build-wheel.sh "$work/dist" "$venv/bin/python")
"$venv/bin/python" -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$wheel" "$work/site"
# from $work: lint-imports puts the current directory first on sys.path, and the checkout's longwatch/ is not the layout
(cd "$work" && PYTHONPATH="$work/site" "$venv/bin/lint-imports" --no-cache "$root/pyproject.toml") || status=1
exit $status
