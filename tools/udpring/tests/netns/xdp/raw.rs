//! The xdp backend against frames built by hand in A (Python over an
//! `AF_PACKET` socket) and datagrams from forged ports: what a stranger on
//! the link can send, tags, and crowds of new sources.

use std::process::Command;

use super::{python_client, xdp_echo};
use crate::topo::{Topology, forge_from_port, json_of};

/// Runs Python in A with a raw frame builder for UDP to B's port
/// (`frame(payload, bad_sum=False, ip_len_extra=0, vlan=None, src=A,
/// to_mac=B's)`) and an
/// `AF_PACKET` socket `s` on x0; `body` uses them.
fn raw_in_a(t: &Topology, port: u16, body: &str) -> String {
    let py = format!("{PRELUDE}{body}");
    let out = t
        .exec("a", "python3")
        .args(["-c", &py])
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

const PRELUDE: &str = r#"
import socket, struct, subprocess, sys
port = int(sys.argv[1])
def cs(b):
    if len(b) % 2: b += bytes(1)
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return s
neigh = subprocess.run(['ip', 'neigh', 'show', '10.202.0.2'], capture_output=True, text=True).stdout.split()
dmac = bytes.fromhex(neigh[neigh.index('lladdr') + 1].replace(':', ''))
smac = bytes.fromhex(open('/sys/class/net/x0/address').read().strip().replace(':', ''))
src, dst = socket.inet_aton('10.202.0.1'), socket.inet_aton('10.202.0.2')
def frame(payload, bad_sum=False, ip_len_extra=0, vlan=None, src=src, to_mac=None):
    ulen = 8 + len(payload)
    udp = struct.pack('!HHHH', 40000, port, ulen, 0) + payload
    c = (~cs(src + dst + struct.pack('!BBH', 0, 17, ulen) + udp)) & 0xffff or 0xffff
    if bad_sum: c ^= 0x0101
    udp = udp[:6] + struct.pack('!H', c) + udp[8:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + ulen + ip_len_extra, 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack('!H', (~cs(ip)) & 0xffff) + ip[12:]
    tag = struct.pack('!HH', 0x8100, vlan) if vlan is not None else b''
    return (to_mac or dmac) + smac + tag + bytes([8, 0]) + ip + udp
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(('x0', 0))
"#;

/// Frames a stranger makes, raw from A's interface to B's MAC and the
/// echo's port: ten with a bad UDP checksum, five whose IP length claims
/// more than the frame holds, three for another host's MAC.
fn hostile_frames(t: &Topology, port: u16) {
    raw_in_a(
        t,
        port,
        "for i in range(10): s.send(frame(b'bad sum %d' % i, bad_sum=True))\n\
         for i in range(5): s.send(frame(b'long %d' % i, ip_len_extra=100))\n\
         for i in range(3): s.send(frame(b'not for B %d' % i, to_mac=bytes([2, 0, 0, 0, 0, 0x99])))\n",
    );
}

#[test]
fn xdp_counts_and_drops_hostile_frames() {
    let t = crate::topology!(xdp, "xh");
    let echo = xdp_echo(&t);
    // One good exchange first: A learns B's MAC.
    assert_eq!(python_client(&t, "10.202.0.2:7000", 1), 1);
    hostile_frames(&t, 7000);
    let v = json_of(&echo.finish());
    assert_eq!(v["xdp_bad_checksums"].as_u64(), Some(10), "{v}");
    assert_eq!(v["xdp_bad_frames"].as_u64(), Some(8), "{v}");
    assert_eq!(
        (v["received"].as_u64(), v["sent"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(v["slots_out"].as_u64(), Some(0));
}

#[test]
fn xdp_echo_replies_carry_the_server_mark_so_two_servers_never_loop() {
    let t = crate::topology!(xdp, "xm");
    let xdp = xdp_echo(&t);
    let plain = t.server(
        "a",
        &[
            "echo",
            "--backend",
            "mmsg",
            "-b",
            "10.202.0.1:7020",
            "-w",
            "1",
            "--duration",
            "3",
            "--json",
        ],
    );
    // Warm the neighbour tables both ways (the answer goes as a frame).
    assert_eq!(python_client(&t, "10.202.0.2:7000", 1), 1);
    // A datagram "from" A's echo to B's: B answers once, with the mark,
    // and A's echo refuses the answer instead of answering it back.
    t.run_in("a", || {
        forge_from_port(7020, "10.202.0.2:7000".parse().unwrap(), b"start a loop")
    });
    let b = json_of(&xdp.finish());
    let a = json_of(&plain.finish());
    assert_eq!(
        (b["received"].as_u64(), b["sent"].as_u64()),
        (Some(2), Some(2)),
        "{b}"
    );
    assert_eq!(
        b["xdp_tx"].as_u64(),
        Some(2),
        "both answers left as frames: {b}"
    );
    assert_eq!(
        (
            a["received_bufs"].as_u64(),
            a["sent"].as_u64(),
            a["guard_marked"].as_u64()
        ),
        (Some(1), Some(0), Some(1)),
        "A's echo refused B's marked answer: {a}"
    );
}

#[test]
fn xdp_answers_a_tagged_frame_with_the_same_tag() {
    let t = crate::topology!(xdp, "xv");
    let echo = xdp_echo(&t);
    assert_eq!(python_client(&t, "10.202.0.2:7000", 1), 1);
    // A has no VLAN device: its raw socket sends the tagged frame and
    // reads the answer as it came in (A's receive path moves the tag to
    // the packet's auxiliary data, PACKET_AUXDATA, before taps see it).
    let got = raw_in_a(
        &t,
        7000,
        "s.settimeout(2)\n\
         s.setsockopt(263, 8, 1)\n\
         s.send(frame(b'tagged question', vlan=5))\n\
         while True:\n\
         \x20   f, anc, _, addr = s.recvmsg(2048, 256)\n\
         \x20   if addr[2] == socket.PACKET_OUTGOING or not f.endswith(b'tagged question'): continue\n\
         \x20   aux = [d for (l, ty, d) in anc if l == 263 and ty == 8][0]\n\
         \x20   status, tci = struct.unpack_from('I', aux, 0)[0], struct.unpack_from('H', aux, 16)[0]\n\
         \x20   print(tci & 0xfff if status & 0x10 else 'untagged'); break\n",
    );
    assert_eq!(got, "5", "the answer carries the question's tag");
    let v = json_of(&echo.finish());
    assert_eq!(v["xdp_tx"].as_u64(), Some(2), "{v}");
}

#[test]
fn xdp_answers_a_crowd_of_new_sources_behind_a_gateway_as_frames() {
    let t = crate::topology!(xdp, "xc");
    // 10.99.0.0/16 lies behind A: answers to it go to A's MAC, which B
    // knows, found by a route lookup per new source.
    let ok = Command::new("ip")
        .args([
            "-n",
            &format!("{}-b", t.name),
            "route",
            "add",
            "10.99.0.0/16",
            "via",
            "10.202.0.1",
        ])
        .status()
        .unwrap();
    assert!(ok.success());
    let echo = xdp_echo(&t);
    assert_eq!(python_client(&t, "10.202.0.2:7000", 1), 1);
    raw_in_a(
        &t,
        7000,
        "for i in range(400):\n\
         \x20   s.send(frame(b'crowd', src=socket.inet_aton('10.99.%d.%d' % (i // 200, 1 + i % 200))))\n",
    );
    let v = json_of(&echo.finish());
    let (tx, via) = (
        v["xdp_tx"].as_u64().unwrap(),
        v["xdp_tx_via_socket"].as_u64().unwrap(),
    );
    assert_eq!(v["received"].as_u64(), Some(401), "{v}");
    assert_eq!(tx + via, 401, "every one answered: {v}");
    // The way to each is the gateway's MAC: frames (lookups beyond the
    // per-batch budget, if a burst ever was that large, through the socket).
    assert!(tx > 200, "frames {tx}, through the socket {via}");
}
