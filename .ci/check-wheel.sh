#!/usr/bin/env bash
# The wheel as a user installs it, checked the way `make test` does after pytest:
#   pip wheel --no-deps . ; a fresh venv outside the checkout with torch==2.13.0 first (the CPU wheel on
#   CPU machines; a looser spec pulls CUDA packages), the wheel with its `cpu` extra into it; then, from
#   a directory outside the checkout: top_level.txt is exactly `longwatch`, `import app` fails,
#   `longwatch --version` runs, and `longwatch ask` answers about a generated video with the offline preset.
# Usage: check-wheel.sh [PY]   (PY: the interpreter that creates the venv, default python3; the Makefile passes its PY)
set -euo pipefail
PY=${1:-python3}
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/longwatch-wheel.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "check-wheel: FAILED: $*" >&2; exit 1; }

bash "$root/.ci/make-venv.sh" "$PY" "$work/venv"
vpy="$work/venv/bin/python"
wheel=$(bash "$root/.ci/build-wheel.sh" "$work/dist" "$vpy")
echo "check-wheel: built $(basename "$wheel"); installing it into a fresh venv ($PY)"
"$vpy" -m pip install -q torch==2.13.0
"$vpy" -m pip install -q "$wheel[cpu]"

mkdir "$work/elsewhere" && cd "$work/elsewhere"   # no checkout folders on sys.path here
top=$("$vpy" -c 'import sys, zipfile
z = zipfile.ZipFile(sys.argv[1])
print(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/top_level.txt"))).decode().strip())' "$wheel")
[ "$top" = longwatch ] || fail "top_level.txt is '$top', not 'longwatch'"
if "$vpy" -c "import app" >/dev/null 2>&1; then fail "'import app' works in the wheel's venv"; fi
version=$("$work/venv/bin/longwatch" --version) || fail "longwatch --version"
echo "check-wheel: $version; top_level.txt = $top; 'import app' fails, as it should"

"$vpy" -c 'from longwatch.eval.sample_video import make_sample_video
make_sample_video("clip.mp4", seconds=8, size=(120, 160), fps=6)'
HF_HUB_OFFLINE=1 "$work/venv/bin/longwatch" ask clip.mp4 "What did the sign say at 00:03?" --model tiny \
    --frame-size 128 --max-new-tokens 4 --json >answer.json 2>stderr.txt \
    || { cat stderr.txt >&2; fail "longwatch ask on the installed wheel"; }
"$vpy" -c 'import json, sys; a = json.load(open("answer.json")); assert a["patches"] == 8 and a["tokens"] > 0, a' \
    || fail "longwatch ask printed no answer: $(cat answer.json)"
grep -q "random weights" stderr.txt || fail "longwatch ask with the tiny preset gave no random-weights warning"
echo "check-wheel: ok: longwatch ask from $(pwd) answered with the installed wheel ($(wc -l <stderr.txt) stderr line)"
