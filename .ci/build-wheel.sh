#!/usr/bin/env bash
# Build longwatch's wheel (`pip wheel --no-deps`) from a clean copy of this working tree into OUTDIR;
# prints the wheel's path. A copy, so stale files in ./build never end up in the wheel.
# Usage: build-wheel.sh OUTDIR [PYTHON]   (PYTHON: an interpreter with pip, default .venv/bin/python)
set -euo pipefail
out=$1
root=$(cd "$(dirname "$0")/.." && pwd)
py=${2:-$root/.venv/bin/python}
src=$(mktemp -d /tmp/longwatch-src.XXXXXX)
trap 'rm -rf "$src"' EXIT
if git -C "$root" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # tracked and untracked-but-not-ignored files: what a commit of this tree would hold
    (cd "$root" && git ls-files -z --cached --others --exclude-standard \
        | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -xf - -C "$src"
else
    (cd "$root" && tar --exclude=./.venv --exclude=./build --exclude=./.git -cf - .) | tar -xf - -C "$src"
fi
mkdir -p "$out"
"$py" -m pip wheel -q --no-deps "$src" -w "$out" >&2
ls "$out"/longwatch-*.whl
