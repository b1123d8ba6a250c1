#!/usr/bin/env bash
# Create the virtual environment VENV (default .venv) with interpreter PY (default python3), as `make` does.
# A distribution Python without its venv module (Debian/Ubuntu: python3.X-venv) gets it from apt when we
# are root; otherwise one line says what to install, exit status 2. PY must be Python 3.11 or newer.
set -u
PY=${1:-python3}
VENV=${2:-.venv}

fail() { echo "make-venv: $*" >&2; exit 2; }

command -v "$PY" >/dev/null 2>&1 || fail "no interpreter '$PY' (give make PY=/path/to/python3.11 or newer)"
ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) || fail "'$PY' does not run"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "longwatch needs Python 3.11 or newer, '$PY' is $ver (give make PY=python3.11)"
[ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1 && exit 0

make_venv() { rm -rf "$VENV"; "$PY" -m venv "$VENV" >/dev/null 2>&1 && "$VENV/bin/python" -c 'import pip' >/dev/null 2>&1; }

make_venv && exit 0
rm -rf "$VENV"
# Debian and Ubuntu split venv/ensurepip out of the interpreter package
pkg="python$ver-venv"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "make-venv: $PY has no working venv module; installing $pkg with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$pkg"; } >/dev/null 2>&1 \
        || fail "apt-get could not install $pkg (install the venv module of $PY, or give make PY=another python3)"
    make_venv && exit 0
    rm -rf "$VENV"
    fail "$PY still cannot create a virtual environment after installing $pkg"
fi
fail "$PY has no venv module: install it (Debian/Ubuntu: sudo apt-get install $pkg), or give make PY=another python3"
