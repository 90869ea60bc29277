#!/usr/bin/env python3
"""Captures the packets of coturn's client tools against tsunagi, as hex, for the
codec benches (crates/stun/benches, crates/turn/benches).

    python3 crates/turn/benches/data/capture.py [--tsunagi target/release/tsunagi]

Starts tsunagi on 127.0.0.1 (static user test:test, realm bench.example.org), a UDP
proxy in front of it that records every client datagram, and a UDP echo peer that
records what the relay sends it; runs turnutils_stunclient, then turnutils_uclient
with channels (ChannelBind + ChannelData) and with Send indications (-s), 100-byte
messages; writes the first packet of each kind to <kind>.hex next to this script.
Loopback only; every process it starts is stopped."""
import argparse, os, select, socket, subprocess, struct, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ap = argparse.ArgumentParser()
ap.add_argument("--tsunagi", default=os.path.join(HERE, "../../../../target/release/tsunagi"))
args = ap.parse_args()

TS_PORT, PROXY_PORT = 34880, 34881
server = subprocess.Popen([args.tsunagi, "--listening-ip", "127.0.0.1", "--listening-port", str(TS_PORT),
    "--no-tcp", "--relay-ip", "127.0.0.1", "--min-port", "34900", "--max-port", "34999",
    "--user", "test:test", "--realm", "bench.example.org", "--allow-loopback-peers",
    "--http-ip", "127.0.0.1", "--http-port", "34882", "--no-sfu"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(0.5)

proxy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); proxy.bind(("127.0.0.1", PROXY_PORT))
peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); peer.bind(("127.0.0.1", 0))
upstream = {}  # client addr -> socket towards tsunagi
captured = []  # (direction, bytes)

def pump(until):
    while time.time() < until:
        socks = [proxy, peer] + list(upstream.values())
        r, _, _ = select.select(socks, [], [], 0.05)
        for s in r:
            data, src = s.recvfrom(65536)
            if s is proxy:
                u = upstream.get(src)
                if u is None:
                    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
                    upstream[src] = u
                captured.append(("client", data))
                u.sendto(data, ("127.0.0.1", TS_PORT))
            elif s is peer:
                captured.append(("peer", data))
                peer.sendto(data, src)
            else:
                client = next(c for c, u in upstream.items() if u is s)
                captured.append(("server", data))
                proxy.sendto(data, client)

def run(cmd):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while p.poll() is None and time.time() < deadline:
        pump(time.time() + 0.1)
    if p.poll() is None:
        p.kill()
    pump(time.time() + 0.3)

try:
    run(["turnutils_stunclient", "-p", str(PROXY_PORT), "127.0.0.1"])
    pp = str(peer.getsockname()[1])
    common = ["-u", "test", "-w", "test", "-p", str(PROXY_PORT), "-e", "127.0.0.1", "-r", pp,
              "-m", "1", "-n", "5", "-l", "100", "-z", "5", "-c", "-X"]
    run(["turnutils_uclient"] + common + ["127.0.0.1"])
    run(["turnutils_uclient", "-s"] + common + ["127.0.0.1"])
finally:
    server.terminate(); server.wait()

def stun(d):
    if len(d) < 20 or d[0] & 0xC0: return None
    t = struct.unpack("!H", d[:2])[0]
    method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2)
    cls = ((t >> 4) & 1) | ((t >> 7) & 2)
    attrs, i = set(), 20
    while i + 4 <= len(d):
        at, ln = struct.unpack("!HH", d[i:i+4]); attrs.add(at); i += 4 + ((ln + 3) & ~3)
    return method, cls, attrs

kinds = {}
for who, d in captured:
    name = None
    if who == "peer":
        name = "peer_data_%d" % len(d)
    elif who == "client" and 0x40 <= d[0] <= 0x7F:
        name = "channel_data_%d" % (len(d) - 4)
    elif who == "client":
        s = stun(d)
        if s is None: continue
        method, cls, attrs = s
        names = {1: "binding", 3: "allocate", 4: "refresh", 6: "send", 8: "create_permission", 9: "channel_bind"}
        name = names.get(method, "method%d" % method) + {0: "_request", 1: "_indication"}.get(cls, "")
        if 0x0008 in attrs: name += "_integrity_sha1"
        if 0x8028 in attrs: name += "_fingerprint"
    if name and name not in kinds:
        kinds[name] = d
for name, d in sorted(kinds.items()):
    with open(os.path.join(HERE, name + ".hex"), "w") as f:
        f.write(d.hex() + "\n")
    print(name, len(d))
if not any(k.startswith("channel_data") for k in kinds):
    sys.exit("no ChannelData captured")
