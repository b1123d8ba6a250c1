#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing. Called from .ci/run.
# Needs root and apt-get; without them it does nothing, and the tests that need a package skip
# with that package's name in the reason (they never pass silently).
set -u

packages=()

# --- ingest (issue 4): a real RTSP peer for tests/test_ingest_rtsp.py ---------------------------
# tests/rtsp_server.py runs GstRtspServer on Debian's /usr/bin/python3 (python3-gi):
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

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "install-system-deps: not root or no apt-get; not installing ${packages[*]}" >&2
    exit 0
fi
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-system-deps: all ${#packages[@]} packages present"
    exit 0
fi
echo "install-system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; }; then
    echo "install-system-deps: apt-get failed; tests needing ${missing[*]} will skip" >&2
fi
exit 0
