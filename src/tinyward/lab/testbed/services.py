"""Small lab-only programs run inside the lab's namespaces (``python -m
tinyward.lab.testbed.services WHAT …``): a device's ordinary LAN chatter, an NTP
responder, the router's deliberately present login page (hydra's target), and the
device-certificate-less TLS connection flood. Each refuses any address outside the lab
and stops on its own after a bounded time or count.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import ipaddress
import random
import socket
import ssl
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dpkt

from tinyward.lab.testbed.plan import LAB_NETWORK

MDNS = ("224.0.0.251", 5353)
NAMES = ("fleet.lab", "time.lab", "router.lab", "updates.lab", "sensor-peer.lab")
NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)


def _in_lab(address: str) -> str:
    if ipaddress.ip_address(address) not in LAB_NETWORK:
        raise SystemExit(f"error: {address} is outside the lab ({LAB_NETWORK}); refused")
    return address


# ------------------------------------------------------------------------- chatter
def dns_query(name: str, ident: int, qtype: int = dpkt.dns.DNS_A) -> bytes:
    query = dpkt.dns.DNS(id=ident, op=dpkt.dns.DNS_RD)
    query.qd = [dpkt.dns.DNS.Q(name=name, type=qtype, cls=dpkt.dns.DNS_IN)]
    return bytes(query)


def ntp_request(now: float) -> bytes:
    seconds = int(now) + NTP_EPOCH_OFFSET
    fraction = int((now % 1) * 2**32)
    return b"\x23" + b"\x00" * 39 + struct.pack("!II", seconds, fraction)  # v4, client


def chatter(resolver: str, ntp: str, duration: float, seed: int) -> None:
    """A device's ordinary traffic besides its reports: DNS lookups (A and AAAA) to the
    lab resolver, NTP polls, mDNS announcements; with random gaps, for ``duration`` s."""
    rng = random.Random(seed)
    resolver, ntp = _in_lab(resolver), _in_lab(ntp)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(1.0)
    mdns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mdns.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        what = rng.random()
        try:
            if what < 0.6:
                qtype = dpkt.dns.DNS_A if rng.random() < 0.7 else dpkt.dns.DNS_AAAA
                sock.sendto(dns_query(rng.choice(NAMES), rng.randrange(65536), qtype),
                            (resolver, 53))
                sock.recv(2048)
            elif what < 0.85:
                sock.sendto(ntp_request(time.time()), (ntp, 123))
                sock.recv(2048)
            else:
                mdns.sendto(dns_query("_tinyward._tcp.local", 0, dpkt.dns.DNS_PTR), MDNS)
        except OSError:
            pass  # a lost answer is ordinary chatter too
        time.sleep(min(rng.expovariate(1 / 1.5), 6.0))


# ------------------------------------------------------------------------- NTP server
def ntp_server(address: str, duration: float) -> None:
    """Answer NTP client requests with this host's clock (server mode 4, stratum 2)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((_in_lab(address), 123))
    sock.settimeout(1.0)
    end = time.monotonic() + duration
    while time.monotonic() < end:
        try:
            data, peer = sock.recvfrom(512)
        except TimeoutError:
            continue
        if len(data) < 48:
            continue
        now = time.time()
        stamp = struct.pack("!II", int(now) + NTP_EPOCH_OFFSET, int((now % 1) * 2**32))
        answer = (b"\x24\x02\x06\xec" + b"\x00" * 8 + b"LAB\x00" + stamp + data[40:48]
                  + stamp + stamp)
        sock.sendto(answer, peer)


# ------------------------------------------------------------------------- router login
def router_login(address: str, port: int, password: str, duration: float) -> None:
    """A home router's admin page behind HTTP Basic auth (user ``admin``): the login the
    lab deliberately presents on the device's LAN for hydra to find and brute-force."""
    expected = f"admin:{password}".encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            header = self.headers.get("Authorization", "")
            given = b""
            if header.startswith("Basic "):
                try:
                    given = base64.b64decode(header[6:], validate=True)
                except ValueError:
                    given = b""
            if hmac.compare_digest(given, expected):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"router status: ok\n")
            else:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="lab router"')
                self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((_in_lab(address), port), Handler)
    threading.Timer(duration, server.shutdown).start()
    server.serve_forever()


# ------------------------------------------------------------------------- TLS flood
def tls_flood(target: str, port: int, count: int, workers: int, timeout: float) -> None:
    """``count`` TLS connections without a device certificate (``workers`` at a time);
    prints how many handshakes completed and how many were refused."""
    target = _in_lab(target)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the attacker does not care who answers

    def one(_: int) -> str:
        try:
            with socket.create_connection((target, port), timeout=timeout) as raw, \
                    context.wrap_socket(raw, server_hostname=target) as tls:
                tls.sendall(b"POST /v1/reports HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
                # The server asks for a device certificate; without one it ends the
                # connection (an alert or EOF) instead of answering the request.
                return "answered" if tls.recv(64).startswith(b"HTTP/") else "refused"
        except (OSError, ssl.SSLError):
            return "refused"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, range(count)))
    print(f"tls-flood: {count} connections, {results.count('answered')} answered, "
          f"{results.count('refused')} refused or dropped")


# ------------------------------------------------------------------------- fleet metrics
def fleet_metrics(target: str, port: int, cafile: str) -> None:
    """Print the fleet's ``/metrics`` (the admin token from ``TINYWARD_LAB_ADMIN_TOKEN``,
    never argv; the server's certificate verified against the fleet's root CA)."""
    import os
    import urllib.request

    target = _in_lab(target)
    token = os.environ.get("TINYWARD_LAB_ADMIN_TOKEN", "")
    context = ssl.create_default_context(cafile=cafile)
    request = urllib.request.Request(f"https://{target}:{port}/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:  # noqa: S310 (https, built above)
        sys.stdout.write(answer.read(1 << 20).decode("utf-8", "replace"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tinyward.lab.testbed.services")
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("chatter")
    p.add_argument("--resolver", required=True)
    p.add_argument("--ntp", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("ntp-server")
    p.add_argument("--address", required=True)
    p.add_argument("--duration", type=float, required=True)
    p = sub.add_parser("router-login")
    p.add_argument("--address", required=True)
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--password-file", required=True)
    p.add_argument("--duration", type=float, required=True)
    p = sub.add_parser("tls-flood")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--timeout", type=float, default=3.0)
    p = sub.add_parser("metrics")
    p.add_argument("--target", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cafile", required=True)
    args = parser.parse_args(argv)
    for bound in ("duration", "count"):
        value = getattr(args, bound, None)
        if value is not None and not 0 < value <= 86400:
            raise SystemExit(f"error: --{bound} {value} is out of bounds")
    if args.what == "chatter":
        chatter(args.resolver, args.ntp, args.duration, args.seed)
    elif args.what == "ntp-server":
        ntp_server(args.address, args.duration)
    elif args.what == "router-login":
        with open(args.password_file, encoding="utf-8") as handle:
            password = handle.read().strip()
        router_login(args.address, args.port, password, args.duration)
    elif args.what == "metrics":
        fleet_metrics(args.target, args.port, args.cafile)
    else:
        tls_flood(args.target, args.port, min(args.count, 5000), min(args.workers, 64),
                  args.timeout)


if __name__ == "__main__":
    main(sys.argv[1:])
