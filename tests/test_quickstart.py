"""The Quickstart's venv step (.ci/make-venv.sh): a Python without venv and no root to install it is one line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE_VENV = ROOT / ".ci" / "make-venv.sh"


def _exe(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def _run(py: str, venv: Path, path_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{path_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(MAKE_VENV), py, str(venv)], capture_output=True, text=True, env=env, timeout=120)


@pytest.fixture
def no_venv_python(tmp_path) -> Path:
    """A Python 3.11+ whose venv module is missing, as on Debian without python3.X-venv."""
    return _exe(tmp_path / "python3", f"""#!/bin/sh
if [ "$1" = -m ] && [ "$2" = venv ]; then
    echo "The virtual environment was not created successfully because ensurepip is not available." >&2
    exit 1
fi
exec {sys.executable} "$@"
""")


def test_no_venv_module_and_no_root_says_what_to_install(tmp_path, no_venv_python):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _exe(bin_dir / "id", "#!/bin/sh\necho 1000\n")  # not root: nothing may be installed
    r = _run(str(no_venv_python), tmp_path / "venv", bin_dir)
    ver = "%d.%d" % sys.version_info[:2]
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stdout == "" and r.stderr.count("\n") == 1
    assert "has no venv module" in r.stderr and f"apt-get install python{ver}-venv" in r.stderr
    assert not (tmp_path / "venv").exists()


def test_too_old_or_missing_interpreter_is_one_line(tmp_path):
    old = _exe(tmp_path / "python3.9", f"""#!/bin/sh
case "$*" in *version_info\\ \\<*) exit 1;; *version_info*) echo 3.9; exit 0;; esac
exec {sys.executable} "$@"
""")
    r = _run(str(old), tmp_path / "venv", tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "needs Python 3.11 or newer" in r.stderr
    r = _run(str(tmp_path / "no-such-python"), tmp_path / "venv", tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no interpreter" in r.stderr


def test_an_existing_venv_is_kept(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    marker = venv / "kept"
    marker.write_text("")
    r = _run(sys.executable, venv, tmp_path)
    assert r.returncode == 0, r.stderr
    assert marker.exists()
