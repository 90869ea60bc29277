#!/usr/bin/env python3
"""A WHIP publisher that is not a browser: aiortc sends a generated video (a moving
colour pattern, VP8) and a 440 Hz sine (Opus) to POST /whip/{room}, for a bounded time,
then DELETEs its session.

    publish.py --url http://127.0.0.1:8080 --room R [--duration 30] [--token T]

aiortc does not trickle: every candidate is in the offer (setLocalDescription gathers
them all). aioice never offers 127.0.0.1, so its host addresses are replaced by
--local-ip (default 127.0.0.1): the tests run in a network namespace with only
loopback. No STUN server (aiortc's default is a public one).

Progress goes to stdout as JSON lines: {"event": "created", "resource": ...},
{"event": "connected"}, {"event": "deleted", "status": 200}, {"event": "error", ...}.
SIGINT or SIGTERM ends the run early (with the DELETE). Exit status 0 when the
session was created, connected and deleted with 200.
"""

import argparse
import asyncio
import fractions
import json
import math
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import aioice.ice
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from av import AudioFrame, VideoFrame

MAX_DURATION = 300.0
CONNECT_TIMEOUT = 20.0


def say(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


class PatternVideo(VideoStreamTrack):
    """A moving colour gradient with a white bar sweeping across: easy to see that it
    moves, and not trivially compressible."""

    kind = "video"

    def __init__(self, width=320, height=240):
        super().__init__()
        self.width, self.height = width, height
        y, x = np.mgrid[0:height, 0:width]
        self.x, self.y = x, y
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        n = self.n
        self.n += 1
        img = np.empty((self.height, self.width, 3), dtype=np.uint8)
        img[..., 0] = (self.x + 3 * n) % 256
        img[..., 1] = (self.y + 2 * n) % 256
        img[..., 2] = (self.x + self.y + n) % 256
        bar = (4 * n) % self.width
        img[:, bar : bar + 8, :] = 255
        frame = VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class SineAudio(MediaStreamTrack):
    """440 Hz at 48 kHz, mono, 20 ms frames, paced in real time."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self):
        super().__init__()
        self.start = None
        self.pts = 0

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
        else:
            self.pts += self.SAMPLES
            wait = self.start + self.pts / self.RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (np.arange(self.SAMPLES) + self.pts) / self.RATE
        samples = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        frame = AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self.pts
        frame.time_base = fractions.Fraction(1, self.RATE)
        return frame


def http(method, url, body=None, content_type=None, token=None):
    """(status, headers, body text) of one request; HTTP errors are answers too."""
    headers = {}
    if content_type:
        headers["Content-Type"] = content_type
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body.encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode(errors="replace")


async def run(args):
    local_ip = args.local_ip
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: [local_ip]

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    connected = asyncio.Event()
    failed = asyncio.Event()

    @pc.on("connectionstatechange")
    async def on_state():
        say("state", state=pc.connectionState)
        if pc.connectionState == "connected":
            connected.set()
        elif pc.connectionState in ("failed", "closed"):
            failed.set()

    pc.addTransceiver(SineAudio(), direction="sendonly")
    pc.addTransceiver(PatternVideo(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())

    loop = asyncio.get_running_loop()
    endpoint = f"{args.url.rstrip('/')}/whip/{urllib.parse.quote(args.room)}"
    status, headers, body = await loop.run_in_executor(
        None, lambda: http("POST", endpoint, pc.localDescription.sdp, "application/sdp", args.token)
    )
    if status != 201:
        say("error", message=f"WHIP returned {status}: {body.strip()}")
        await pc.close()
        return 1
    location = next((v for k, v in headers.items() if k.lower() == "location"), None)
    if not location:
        say("error", message="WHIP answered 201 without a Location")
        await pc.close()
        return 1
    resource = urllib.parse.urljoin(endpoint, location)
    say("created", resource=resource)

    ok = True
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
        stop = asyncio.Event()
        for s in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(s, stop.set)
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(connected.wait()), asyncio.ensure_future(failed.wait())],
            timeout=CONNECT_TIMEOUT,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if not connected.is_set():
            say("error", message=f"not connected within {CONNECT_TIMEOUT} s (state {pc.connectionState})")
            ok = False
        else:
            say("connected")
            try:
                await asyncio.wait_for(
                    asyncio.wait(
                        [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(failed.wait())],
                        return_when=asyncio.FIRST_COMPLETED,
                    ),
                    timeout=args.duration,
                )
            except asyncio.TimeoutError:
                pass
            if failed.is_set():
                say("error", message=f"the connection ended early ({pc.connectionState})")
                ok = False
    finally:
        status, _, body = await loop.run_in_executor(None, lambda: http("DELETE", resource, token=args.token))
        say("deleted", status=status, body=body.strip())
        ok = ok and status == 200
        await pc.close()
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the server's HTTP base URL")
    p.add_argument("--room", required=True)
    p.add_argument("--duration", type=float, default=30.0, help=f"seconds to publish (at most {MAX_DURATION:.0f})")
    p.add_argument("--token", help="access token (Authorization: Bearer)")
    p.add_argument("--local-ip", default="127.0.0.1", help="the host candidate's address")
    args = p.parse_args()
    if not 0 < args.duration <= MAX_DURATION:
        p.error(f"--duration must be in (0, {MAX_DURATION:.0f}]")
    try:
        sys.exit(asyncio.run(run(args)))
    except Exception as e:  # a clear line rather than a traceback in test output
        say("error", message=f"{type(e).__name__}: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
