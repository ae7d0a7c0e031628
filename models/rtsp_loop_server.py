#!/usr/bin/python3
"""N live RTSP cameras on 127.0.0.1 for `make bench-watch`'s many-cameras part (issue 17): one gst-rtsp-server
serving rtsp://127.0.0.1:PORT/cam0 ... /cam<N-1>, each an H.264 MP4 clip played at its own rate (25 fps), as
its own camera (one media per mount, shared by the clients of that mount). Nothing is decoded or encoded here:
the clip's H.264 is parsed and payloaded as it is, so the server costs next to no CPU beside the lookout under
test.

Run with /usr/bin/python3 (python3-gi with GstRtspServer, Debian's gir1.2-gst-rtsp-server-1.0). It prints one
line `port PORT` on stdout once it listens, then serves until its standard input closes (the benchmark's end,
or its death), SIGTERM, or --max-seconds.

    /usr/bin/python3 models/rtsp_loop_server.py --clip out/bench/camera.mp4 --streams 4 --max-seconds 600
"""

import argparse
import signal
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", required=True, help="an MP4 with one H.264 stream")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--port", type=int, default=0, help="0: a free port (printed)")
    ap.add_argument("--max-seconds", type=float, default=900, help="stop after this long whatever happens")
    a = ap.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    for k in range(a.streams):
        f = GstRtspServer.RTSPMediaFactory()
        # config-interval=-1: SPS/PPS with every key frame, so a client that joins late starts at the next one.
        f.set_launch(f"( filesrc location={a.clip} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 "
                     "config-interval=-1 )")
        f.set_shared(True)
        mounts.add_factory(f"/cam{k}", f)
    server.attach(None)
    print(f"port {server.get_bound_port()}", flush=True)
    loop = GLib.MainLoop()

    def watch_stdin():
        sys.stdin.read()  # returns when the parent closes it or dies
        GLib.idle_add(loop.quit)

    threading.Thread(target=watch_stdin, daemon=True).start()
    GLib.timeout_add(int(a.max_seconds * 1000), loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, loop.quit)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
