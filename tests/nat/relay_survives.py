#!/usr/bin/env python3
"""A TURN relay survives a peer that becomes unreachable (tests/nat/run, docs/nat-lab.md).

Run by tests/nat/run inside a NAT lab (scripts/nat-lab --exec), in the namespace of a
host behind a NAT, with the lab's LAB_* variables:

    ip netns exec "$LAB_HOST_A" python3 tests/nat/relay_survives.py

LAB_SERVER (tsunagi's STUN/TURN address), LAB_URL (its web server), LAB_TURN_SECRET (the
REST API secret tsunagi was given), LAB_REALM, LAB_PUB (tsunagi's namespace), LAB_HOST_B /
LAB_IP_B and LAB_HOST_C / LAB_IP_C (two hosts with public addresses, the peers), and
LAB_WORK (tsunagi.log).

1. Starts a UDP echo server in each peer host.
2. Allocates a relay on tsunagi (401 challenge, then long-term credentials from the REST
   secret), creates permissions for both peers, sends to both through the relay (Send
   indications) and expects every echo back (Data indications) from both.
3. Makes peer 1 unreachable from tsunagi: an `unreachable` route for it in tsunagi's
   namespace, so that the relay's sendto() fails with EHOSTUNREACH. Checks that it does
   (tsunagi's /api/stats sendErrors and, at log level debug, its "send failed" line).
4. Keeps sending to both: every echo from peer 2 must arrive, none from peer 1.
5. Removes the route: echoes from peer 1 come back (the allocation is still whole).

Python 3.11 standard library only; STUN/TURN messages (RFC 8489, RFC 8656) by hand.
Prints what it sees and a last line `PASS ...` or `FAIL ...`; exits 0 or 1.
"""

import base64
import hashlib
import hmac
import json
import os
import secrets
import socket
import struct
import subprocess
import sys
import time
import urllib.request

MAGIC = 0x2112A442
# Methods and classes.
ALLOCATE, REFRESH, SEND, DATA, CREATE_PERMISSION = 0x003, 0x004, 0x006, 0x007, 0x008
REQUEST, INDICATION, SUCCESS, ERROR = 0x000, 0x010, 0x100, 0x110
# Attributes.
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, LIFETIME = 0x0006, 0x0008, 0x0009, 0x000D
XOR_PEER_ADDRESS, DATA_ATTR, REALM, NONCE = 0x0012, 0x0013, 0x0014, 0x0015
XOR_RELAYED_ADDRESS, REQUESTED_TRANSPORT, XOR_MAPPED_ADDRESS = 0x0016, 0x0019, 0x0020

ECHO_PORT = 7000
ECHO = (
    "import socket,sys;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);"
    "s.bind(('0.0.0.0',int(sys.argv[1])));[s.sendto(*s.recvfrom(4096)) for _ in iter(int,1)]"
)


def fail(msg):
    print(f"FAIL relay survives an unreachable peer: {msg}", flush=True)
    sys.exit(1)


def attr(t, v):
    return struct.pack("!HH", t, len(v)) + v + b"\0" * (-len(v) % 4)


def xor_addr(ip, port):
    x = struct.unpack("!I", socket.inet_aton(ip))[0] ^ MAGIC
    return struct.pack("!BBHI", 0, 1, port ^ (MAGIC >> 16), x)


def parse_xor_addr(v):
    _, family, port, x = struct.unpack("!BBHI", v[:8])
    if family != 1:
        raise ValueError("not IPv4")
    return socket.inet_ntoa(struct.pack("!I", x ^ MAGIC)), port ^ (MAGIC >> 16)


def message(mtype, attrs, txid=None, key=None):
    """A STUN message; with `key`, MESSAGE-INTEGRITY (HMAC-SHA1) over everything before it."""
    txid = txid or secrets.token_bytes(12)
    body = b"".join(attr(t, v) for t, v in attrs)
    if key is None:
        return struct.pack("!HHI12s", mtype, len(body), MAGIC, txid) + body
    # The length covers MESSAGE-INTEGRITY (24 bytes) when the HMAC is computed.
    head = struct.pack("!HHI12s", mtype, len(body) + 24, MAGIC, txid)
    mac = hmac.new(key, head + body, hashlib.sha1).digest()
    return head + body + attr(MESSAGE_INTEGRITY, mac)


def parse(data):
    """(type, txid, {attr: [values]}) or None for what is not a STUN message."""
    if len(data) < 20:
        return None
    mtype, length, magic, txid = struct.unpack("!HHI12s", data[:20])
    if magic != MAGIC or len(data) < 20 + length:
        return None
    attrs, i = {}, 20
    while i + 4 <= 20 + length:
        t, n = struct.unpack("!HH", data[i : i + 4])
        attrs.setdefault(t, []).append(data[i + 4 : i + 4 + n])
        i += 4 + n + (-n % 4)
    return mtype, txid, attrs


class Turn:
    def __init__(self, server, username, password, realm_hint):
        self.server = server
        self.username = username
        self.password = password
        self.realm = realm_hint
        self.nonce = None
        self.key = None
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.data = []  # (peer, payload) of Data indications that came while waiting

    def transact(self, method, attrs, authenticated=True):
        """Sends a request (retransmitted up to 4 times) and returns (class, attrs)."""
        txid = secrets.token_bytes(12)
        a = list(attrs)
        key = None
        if authenticated:
            a += [(USERNAME, self.username.encode()), (REALM, self.realm.encode()), (NONCE, self.nonce)]
            key = self.key
        msg = message(method | REQUEST, a, txid, key)
        for attempt in range(4):
            self.sock.sendto(msg, self.server)
            deadline = time.monotonic() + 0.5 * (attempt + 1)
            while (left := deadline - time.monotonic()) > 0:
                self.sock.settimeout(left)
                try:
                    d, _ = self.sock.recvfrom(65535)
                except socket.timeout:
                    break
                p = parse(d)
                if p is None:
                    continue
                if p[0] == DATA | INDICATION:
                    self.keep_data(p[2])
                    continue
                if p[1] == txid:
                    return p[0] & 0x110, p[2]
        fail(f"no answer from {self.server} to method {method:#x}")

    def keep_data(self, attrs):
        if XOR_PEER_ADDRESS in attrs and DATA_ATTR in attrs:
            self.data.append((parse_xor_addr(attrs[XOR_PEER_ADDRESS][0]), attrs[DATA_ATTR][0]))

    def allocate(self):
        transport = [(REQUESTED_TRANSPORT, bytes([17, 0, 0, 0]))]
        cls, a = self.transact(ALLOCATE, transport, authenticated=False)
        code = error_code(a)
        if cls != ERROR or code != 401:
            fail(f"Allocate without credentials: expected a 401 challenge, got class {cls:#x} code {code}")
        self.realm = a[REALM][0].decode()
        self.nonce = a[NONCE][0]
        self.key = hashlib.md5(f"{self.username}:{self.realm}:{self.password}".encode()).digest()
        cls, a = self.transact(ALLOCATE, transport)
        if cls != SUCCESS:
            fail(f"Allocate with credentials: error {error_code(a)} {error_reason(a)}")
        relayed = parse_xor_addr(a[XOR_RELAYED_ADDRESS][0])
        mapped = parse_xor_addr(a[XOR_MAPPED_ADDRESS][0]) if XOR_MAPPED_ADDRESS in a else None
        return relayed, mapped

    def create_permission(self, peers):
        cls, a = self.transact(CREATE_PERMISSION, [(XOR_PEER_ADDRESS, xor_addr(ip, port)) for ip, port in peers])
        if cls != SUCCESS:
            fail(f"CreatePermission: error {error_code(a)} {error_reason(a)}")

    def release(self):
        self.transact(REFRESH, [(LIFETIME, struct.pack("!I", 0))])

    def send(self, peer, payload):
        m = message(SEND | INDICATION, [(XOR_PEER_ADDRESS, xor_addr(*peer)), (DATA_ATTR, payload)])
        self.sock.sendto(m, self.server)

    def receive(self, seconds):
        """Data indications arriving within `seconds` (plus those kept earlier)."""
        out, self.data = self.data, []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                d, _ = self.sock.recvfrom(65535)
            except socket.timeout:
                break
            p = parse(d)
            if p and p[0] == DATA | INDICATION and XOR_PEER_ADDRESS in p[2] and DATA_ATTR in p[2]:
                out.append((parse_xor_addr(p[2][XOR_PEER_ADDRESS][0]), p[2][DATA_ATTR][0]))
        return out


def error_code(a):
    v = a.get(ERROR_CODE, [b"\0\0\0\0"])[0]
    return (v[2] & 7) * 100 + v[3]


def error_reason(a):
    return a.get(ERROR_CODE, [b"\0\0\0\0"])[0][4:].decode(errors="replace")


def stats(url):
    with urllib.request.urlopen(f"{url}/api/stats", timeout=5) as r:
        t = json.load(r)["turn"]
    return {
        "sendErrors": t["runtime"]["sendErrors"],
        "packetsToPeers": t["packetsToPeers"],
        "packetsFromPeers": t["packetsFromPeers"],
    }


def exchange(turn, peers, count, tag, spacing=0.005, wait=1.0):
    """Sends `count` numbered packets to each peer, interleaved; returns the echoes per peer."""
    sent = {p: set() for p in peers}
    for i in range(count):
        for n, p in enumerate(peers, 1):
            payload = f"{tag}-peer{n}-{i:04d}".encode()
            sent[p].add(payload)
            turn.send(p, payload)
        time.sleep(spacing)
    got = {p: set() for p in peers}
    for peer, payload in turn.receive(wait):
        if peer in got and payload in sent[peer]:
            got[peer].add(payload)
    return {p: len(got[p]) for p in peers}


def main():
    env = os.environ
    host, port = env["LAB_SERVER"].rsplit(":", 1)
    server = (host, int(port))
    url, pub, secret = env["LAB_URL"], env["LAB_PUB"], env.get("LAB_TURN_SECRET", "")
    if not secret:
        fail("no LAB_TURN_SECRET (start the lab with --turn-secret)")
    peer1 = (env["LAB_IP_B"], ECHO_PORT)
    peer2 = (env["LAB_IP_C"], ECHO_PORT)
    log = os.path.join(env.get("LAB_WORK", "/nonexistent"), "tsunagi.log")

    echoes = []
    try:
        for ns in (env["LAB_HOST_B"], env["LAB_HOST_C"]):
            echoes.append(subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", ECHO, str(ECHO_PORT)]))

        # TURN REST API credentials (draft-uberti-behave-turn-rest): expiry:name and
        # base64(HMAC-SHA1(secret, username)).
        username = f"{int(time.time()) + 600}:relay-survives"
        password = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
        turn = Turn(server, username, password, env.get("LAB_REALM", ""))
        relayed, mapped = turn.allocate()
        print(f"   allocated relay {relayed[0]}:{relayed[1]} (client seen as {mapped[0]}:{mapped[1]})")
        turn.create_permission([peer1, peer2])

        # Until both echo servers answer (they take a moment to start).
        deadline = time.monotonic() + 5
        while True:
            got = exchange(turn, [peer1, peer2], 1, "hello", wait=0.2)
            if all(got.values()):
                break
            if time.monotonic() > deadline:
                fail(f"no echo through the relay within 5 s: {got}")

        n = 50
        got = exchange(turn, [peer1, peer2], n, "before")
        print(f"   both peers reachable: echoes from peer 1 {got[peer1]}/{n}, from peer 2 {got[peer2]}/{n}")
        if got[peer1] != n or got[peer2] != n:
            fail(f"echoes lost while both peers were reachable: {got[peer1]}/{n} and {got[peer2]}/{n}")

        before = stats(url)
        route = f"{peer1[0]}/32"
        subprocess.run(["ip", "-n", pub, "route", "add", "unreachable", route], check=True)
        print(f"   peer 1 ({peer1[0]}) made unreachable in tsunagi's namespace: ip route add unreachable {route}")

        n = during = 200
        got = exchange(turn, [peer1, peer2], n, "during")
        after = stats(url)
        errors = after["sendErrors"] - before["sendErrors"]
        print(
            f"   peer 1 unreachable: echoes from peer 1 {got[peer1]}/{n}, from peer 2 {got[peer2]}/{n};"
            f" tsunagi sendErrors +{errors}, packetsToPeers +{after['packetsToPeers'] - before['packetsToPeers']},"
            f" packetsFromPeers +{after['packetsFromPeers'] - before['packetsFromPeers']}"
        )
        failed_line = ""
        try:
            with open(log, errors="replace") as f:
                failed_line = next((l.strip() for l in f if "send failed" in l and peer1[0] in l), "")
        except OSError:
            pass
        if failed_line:
            print(f"   tsunagi log: {failed_line[-160:]}")
        if errors <= 0:
            fail("sendErrors did not grow: the relay's sendto() to peer 1 did not fail, the test tests nothing")
        if got[peer1] != 0:
            fail(f"{got[peer1]} echoes from peer 1, which is unreachable")
        if got[peer2] != n:
            fail(f"only {got[peer2]}/{n} echoes from peer 2 while peer 1 was unreachable")

        subprocess.run(["ip", "-n", pub, "route", "del", "unreachable", route], check=True)
        n = 50
        got = exchange(turn, [peer1, peer2], n, "after")
        print(f"   route back: echoes from peer 1 {got[peer1]}/{n}, from peer 2 {got[peer2]}/{n}")
        if got[peer1] != n or got[peer2] != n:
            fail(f"echoes lost once peer 1 was reachable again: {got[peer1]}/{n} and {got[peer2]}/{n}")
        turn.release()
        print(
            f"PASS relay survives an unreachable peer: peer 2 echoed all {during}/{during} while {errors} sends to peer 1"
            " failed, and peer 1 echoes again once reachable",
            flush=True,
        )
    finally:
        for p in echoes:
            p.terminate()
        for p in echoes:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
