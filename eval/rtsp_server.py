"""A loopback RTSP server on GStreamer's GstRtspServer, streaming an H.264 MP4 at real-time pace: the camera
that the RTSP tests and `longwatch bench rtsp-soak` kill and restart (eval/rtsp_peer.py starts it).

A script for Debian's Python (it has `gi`), never imported by the project's:
    /usr/bin/python3 eval/rtsp_server.py --port 8554 --video clip.mp4 [--mount /live]
Prints "READY <port>" on stdout once clients can connect; runs until killed. Every client session
plays the file from its start. Needs gstreamer1.0-rtsp, gir1.2-gst-rtsp-server-1.0, python3-gi,
gstreamer1.0-plugins-good (qtdemux, rtph264pay) and gstreamer1.0-plugins-bad (h264parse).
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--video", required=True, help="H.264 MP4 file to stream")
    ap.add_argument("--mount", default="/live")
    args = ap.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    location = args.video.replace("\\", "\\\\").replace('"', '\\"')
    factory.set_launch(f'( filesrc location="{location}" ! qtdemux ! h264parse '
                       f"! rtph264pay name=pay0 pt=96 config-interval=1 )")
    server.get_mount_points().add_factory(args.mount, factory)
    if server.attach(None) == 0:
        print(f"FAILED cannot listen on 127.0.0.1:{args.port}", flush=True)
        return 1
    print(f"READY {server.get_bound_port()}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
