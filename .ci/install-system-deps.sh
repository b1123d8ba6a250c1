#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing. Called from `make test` (.ci/run).
# A package that cannot be had stops the run, so CI never goes green on skipped RTSP and browser tests:
#   root with apt-get: install what is missing; if apt-get fails, name the packages and exit 1.
#   not root, or no apt-get: with CI set (CI=true) name the missing packages and exit 1; on a
#     developer's machine warn loudly, naming them, and exit 0: the tests that need them skip with
#     "Debian package NAME" in the reason, and tests/conftest.py turns those skips into failures when CI is set.
set -u

packages=()

# --- ingest (issue 4): a real RTSP peer for tests/test_ingest_rtsp.py and `longwatch bench rtsp-soak` ---
# eval/rtsp_server.py runs GstRtspServer on Debian's /usr/bin/python3 (python3-gi):
#   filesrc ! qtdemux (plugins-good) ! h264parse (plugins-bad) ! rtph264pay (plugins-good)
packages+=(
    python3                       # /usr/bin/python3, the interpreter that has gi
    python3-gi                    # PyGObject
    gir1.2-gstreamer-1.0          # Gst typelib
    gir1.2-gst-rtsp-server-1.0    # GstRtspServer typelib
    gstreamer1.0-rtsp             # libgstrtspserver
    gstreamer1.0-plugins-base
    gstreamer1.0-plugins-good     # qtdemux, rtph264pay, RTSP/RTP
    gstreamer1.0-plugins-bad      # h264parse
    ffmpeg                        # the RTMP peer in tests/test_ingest_network.py (ffmpeg -listen 1)
)
# --- end ingest ----------------------------------------------------------------------------------

# --- ui (issue 5): a real browser for tests/test_ui_browser.py -------------------------------------
# Playwright (pip, the [test] extra) drives Debian's Chromium through executable_path="/usr/bin/chromium";
# Playwright's own browser download cannot work here.
packages+=(
    chromium                      # /usr/bin/chromium
    chromium-driver               # chromedriver of the same version, for WebDriver-based tools
    fonts-liberation              # metric-compatible Arial/Times: page text in screenshots, not tofu
    fonts-dejavu-core             # glyphs beyond Latin-1 (the UI uses a few: – · … ⚠)
)
# --- end ui --------------------------------------------------------------------------------------

# CI counts as set unless empty, 0, false or no (any case), as tests/conftest.py reads it
ci_value=$(printf '%s' "${CI:-}" | tr -d '[:space:]' | tr '[:upper:]' '[:lower:]')
case "$ci_value" in ""|0|false|no) ci="" ;; *) ci=1 ;; esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
else
    missing=("${packages[@]}")  # no dpkg: nothing can be checked, so nothing counts as present
fi
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-system-deps: all ${#packages[@]} packages present"
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    why="not root or no apt-get, so nothing can be installed"
    if [ -n "$ci" ]; then
        echo "install-system-deps: FAILED: CI is set and ${#missing[@]} packages are missing ($why): ${missing[*]}" >&2
        echo "install-system-deps: run this script as root on Debian, or apt-get install ${missing[*]}" >&2
        exit 1
    fi
    {
        echo "install-system-deps: ======================================================================"
        echo "install-system-deps: WARNING: ${#missing[@]} Debian packages missing ($why):"
        echo "install-system-deps:   ${missing[*]}"
        echo "install-system-deps: the tests that need them (RTSP, RTMP, browser) will SKIP, naming the package;"
        echo "install-system-deps: with CI=true this is an error. Fix: sudo bash .ci/install-system-deps.sh"
        echo "install-system-deps: ======================================================================"
    } >&2
    exit 0
fi

echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq; then
    echo "install-system-deps: FAILED: apt-get update failed; cannot install ${missing[*]}" >&2
    exit 1
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    echo "install-system-deps: FAILED: apt-get install failed for ${missing[*]}" >&2
    exit 1
fi
still=()
for p in "${missing[@]}"; do installed "$p" || still+=("$p"); done
if [ ${#still[@]} -ne 0 ]; then
    echo "install-system-deps: FAILED: apt-get finished but these are not installed: ${still[*]}" >&2
    exit 1
fi
echo "install-system-deps: installed ${#missing[@]} packages"
