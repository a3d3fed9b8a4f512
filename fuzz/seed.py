#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/corpus/TARGET/.

Valid inputs, made the way the programs that produce them lay them out, so
the fuzzer starts past each parser's first checks. Two seeds are real
outputs of `udpring load` (a JSON result and an interval log) when a
built binary is given: `fuzz/seed.py target/debug/udpring`.

Run from the repository's top. The fuzzer adds what it finds to the same
folders (`cargo +nightly fuzz run TARGET`, then `cargo +nightly fuzz cmin
TARGET` to keep only inputs that add coverage).
"""
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# --- udpring's header: magic "UDPR", flow, token, sequence, send time ---
def header(flow, token, seq, ns, pad=b""):
    return struct.pack(">IIQQQ", 0x55445052, flow, token, seq, ns) + pad


put("header", "min", header(0, 0x0123456789ABCDEF, 1, 1000))
put("header", "padded", header(7, 42, 2**40, 2**63, b"\0" * 32))
put("header", "other-magic", b"UDPQ" + b"\0" * 28)

# --- sequence numbers as a ping, a sink or a listener sees them ---
put("sequences", "in-order", b"".join(struct.pack(">Q", i) for i in range(64)))
put("sequences", "reordered", b"".join(struct.pack(">Q", i) for i in [5, 1, 3, 2, 4, 9000, 7, 7, 0]))
put("sequences", "wide", b"".join(struct.pack(">Q", i) for i in [0, 2**63, 2**64 - 1, 1, 2**32]))

# --- fanout --control ---
put("fanout_control", "hello", b"SUB" + b" " * 29)
put("fanout_control", "sub", b"SUB 00000000000000ff\n")
put("fanout_control", "unsub", b"UNSUB ffffffffffffffff")

# --- DNS ---
def name(n):
    return b"".join(bytes([len(p)]) + p.encode() for p in n.split(".") if p) + b"\0"


def dns(qid, flags, qd, an=b"", ancount=0, ar=b"", arcount=0):
    return struct.pack(">HHHHHH", qid, flags, 1, ancount, 0, arcount) + qd + an + ar


q = name("www.example.com") + struct.pack(">HH", 1, 1)
a = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 300, 4) + bytes([192, 0, 2, 1])
opt = b"\0" + struct.pack(">HHIH", 41, 1232, 0, 0)
put("dns_reply", "noerror", dns(0x1234, 0x8180, q, a, 1))
put("dns_reply", "nxdomain-edns", dns(7, 0x8183, q, ar=opt, arcount=1))
put("dns_reply", "truncated", dns(9, 0x8380, q))
put("dns_reply", "query", dns(1, 0x0100, q))
# expect: mode (1 any, 2 mask), pattern length - 1, offset, pattern
# [, mask], answer.
put("expect", "any-overlapping", bytes([1, 2, 0]) + b"aab" + b"xaaab")
put("expect", "rcode-mask", bytes([2, 0, 3, 0x00, 0x0f]) + dns(7, 0x81a0, q))
put("expect", "at-offset", bytes([0, 4, 8]) + b"VALUE" + b"\0" * 8 + b"VALUE k 0 1\r\n")

put("dnsperf", "queries", "www.example.com A\nexample.com AAAA\n# comment\n; too\nexample.org. MX\n\nfoo.example TXT\n")
put("dnsperf", "types", "a.b NS\na.b SOA\na.b PTR\na.b SRV\na.b CAA\na.b ANY\na.b TYPE65\n")

# --- payload files ---
put("payload_file", "hex", "# memcached get over UDP\n00010000000100006765742066\n0x6869\n\n")
put("payload_file", "raw", struct.pack(">H", 3) + b"abc" + struct.pack(">H", 0) + struct.pack(">H", 2) + b"\xff\x00")


# --- captures ---
def udp4(sport, dport, p):
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(p), 1, 0x4000, 64, 17, 0,
                     bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return ip + struct.pack(">HHHH", sport, dport, 8 + len(p), 0) + p


def udp6(sport, dport, p, ext=False):
    nh = 0 if ext else 17
    body = struct.pack(">HHHH", sport, dport, 8 + len(p), 0) + p
    if ext:  # a hop-by-hop options header (8 bytes) before UDP
        body = bytes([17, 0]) + b"\x01\x04\0\0\0\0" + body
    return struct.pack(">IHBB16s16s", 6 << 28, len(body), nh, 64, socket.inet_pton(socket.AF_INET6, "::1"),
                       socket.inet_pton(socket.AF_INET6, "::1")) + body


eth = lambda et, p: b"\0" * 12 + struct.pack(">H", et) + p
vlan = lambda p: b"\0" * 12 + struct.pack(">HHH", 0x8100, 5, 0x0800) + p
sll = lambda p: struct.pack(">HHH8sH", 0, 772, 6, b"\0" * 8, 0x0800) + p
sll2 = lambda p: struct.pack(">HHIHBB8s", 0x86DD, 0, 1, 772, 0, 6, b"\0" * 8) + p


def classic(link, frames, nano=False, big=False):
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    b = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, 65535, link)
    for i, f in enumerate(frames):
        b += struct.pack(e + "IIII", 1700000000 + i, 500 * i, len(f), len(f)) + f
    return b


def block(kind, body):
    n = 12 + (len(body) + 3) // 4 * 4
    return struct.pack("<II", kind, n) + body.ljust(n - 12, b"\0") + struct.pack("<I", n)


def pcapng(link, frames):
    b = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    # if_tsresol = 9 (nanoseconds), then the end of options
    b += block(1, struct.pack("<HHI", link, 0, 0) + struct.pack("<HHB3x", 9, 1, 9) + b"\0\0\0\0")
    for i, f in enumerate(frames):
        t = 1_700_000_000_000_000_000 + i * 1000
        b += block(6, struct.pack("<IIIII", 0, t >> 32, t & 0xFFFFFFFF, len(f), len(f)) + f)
    b += block(3, struct.pack("<I", len(frames[0])) + frames[0])  # a simple packet block
    return b


dnsq = dns(1, 0x0100, q)
put("pcap", "eth-v4", classic(1, [eth(0x0800, udp4(5353, 53, dnsq)), eth(0x0806, b"\0" * 28), eth(0x0800, udp4(1, 11211, b"x"))]))
put("pcap", "eth-v6-nano-be", classic(1, [eth(0x86DD, udp6(1, 53, dnsq)), eth(0x86DD, udp6(1, 9, b"ext", True))], nano=True, big=True))
put("pcap", "sll", classic(113, [sll(udp4(1, 53, dnsq))]))
put("pcap", "raw-ip", classic(101, [udp4(1, 53, b"abc"), udp6(2, 54, b"def")]))
put("pcap", "vlan", classic(1, [vlan(udp4(1, 53, b"tagged"))]))
put("pcap", "sll2", classic(276, [sll2(udp6(1, 53, dnsq))]))
put("pcap", "loopback", classic(0, [struct.pack("<I", 2) + udp4(1, 7, b"bsd")]))
put("pcap", "pcapng", pcapng(1, [eth(0x0800, udp4(1, 53, dnsq)), eth(0x86DD, udp6(3, 4, b"six"))]))

# --- what the kernel writes beside a datagram ---
SOL_IP, SOL_IPV6, SOL_SOCKET, SOL_UDP = 0, 41, 1, 17


def cmsg(level, ty, data):
    n = 16 + len(data)
    return struct.pack("=Qii", n, level, ty) + data + b"\0" * ((8 - n % 8) % 8)


i32 = lambda v: struct.pack("=i", v)
v4 = socket.inet_pton(socket.AF_INET, "127.0.0.1")
v6 = socket.inet_pton(socket.AF_INET6, "::1")
area = (cmsg(SOL_UDP, 104, i32(1400)) + cmsg(SOL_SOCKET, 40, i32(3)) + cmsg(SOL_IP, 8, i32(1) + v4 + v4)
        + cmsg(SOL_IP, 1, b"\x02") + cmsg(SOL_IP, 2, i32(64)) + cmsg(SOL_SOCKET, 35, struct.pack("=qq", 1700000000, 5)))
area6 = (cmsg(SOL_IPV6, 50, v6 + i32(1)) + cmsg(SOL_IPV6, 67, i32(0xB8)) + cmsg(SOL_IPV6, 52, i32(200)))
# sock_extended_err: errno, origin, type, code, pad, info, data; then the offender
ee = lambda errno, origin, info, data: struct.pack("=IBBBBII", errno, origin, 3, 4, 0, info, data)
icmp = cmsg(SOL_IP, 11, ee(90, 2, 1400, 0) + struct.pack("=HH4s8x", 2, 0, v4))
stamp = cmsg(SOL_IP, 11, ee(42, 4, 0, 77)) + cmsg(SOL_SOCKET, 37, struct.pack("=qqqqqq", 1700000000, 1, 0, 0, 0, 0))
put("cmsg", "recv-v4", area)
put("cmsg", "recv-v6", area6)
put("cmsg", "icmp-error", icmp)
put("cmsg", "tx-stamp", stamp)
# io_uring_recvmsg_out, then a 32-byte name and a 168-byte control area,
# then the payload (the multishot receive's layout)
sin = struct.pack("=HH4s8x", 2, 9, v4).ljust(32, b"\0")
put("cmsg", "recvmsg-out", struct.pack("=IIII", 16, len(area), 5, 0) + sin + area.ljust(168, b"\0") + b"hello")

# --- a result and an interval log, from udpring itself ---
if len(sys.argv) > 1:
    udpring = sys.argv[1]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    echo = subprocess.Popen([udpring, "echo", "--bind", f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "h.hlog")
            r = subprocess.run([udpring, "load", f"127.0.0.1:{port}", "--duration", "2", "-i", "0.5",
                                "--rate", "2000", "--json", "--hist-log", log],
                               check=True, capture_output=True)
            put("report_json", "load", r.stdout)
            put("interval_log", "load", open(log, "rb").read())
    finally:
        echo.terminate()
        echo.wait()
