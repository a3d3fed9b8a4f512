//! The xdp backend on a veth pair (A 10.202.0.1 / fd00:202::1, B .2 / ::2,
//! one queue per end, offloads off on both): frames reach udpring without
//! the kernel's UDP stack (its own counters say so), answers go back as
//! frames, the rest of the host keeps working, and nothing stays attached.

use std::process::Command;

use crate::topo::{KillOnDrop, Topology, forge_from_port, json_of, udp_snmp};

/// The UDP counters of `/proc/net/snmp` in namespace `ns`.
fn snmp_in(t: &Topology, ns: &str) -> std::collections::HashMap<String, u64> {
    t.run_in(ns, udp_snmp)
}

/// `udpring echo --backend xdp` on 10.202.0.2:7000 in B for 3 s, one
/// worker, its result as JSON.
fn xdp_echo(t: &Topology) -> KillOnDrop {
    t.server(
        "b",
        &[
            "echo",
            "--backend",
            "xdp",
            "-b",
            "10.202.0.2:7000",
            "-w",
            "1",
            "--duration",
            "3",
            "--json",
        ],
    )
}

/// `ip link show x1` in B: whether an XDP program is attached.
fn attached(t: &Topology) -> bool {
    let out = Command::new("ip")
        .args(["-n", &format!("{}-b", t.name), "link", "show", "x1"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// A Python UDP client in A: sends `n` numbered datagrams to `to` one at a
/// time and prints how many came back equal.
fn python_client(t: &Topology, to: &str, n: u32) -> u32 {
    let (host, port) = to.rsplit_once(':').unwrap();
    let host = host.trim_matches(['[', ']']);
    let fam = if host.contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    let script = format!(
        "import socket\n\
         s=socket.socket(socket.{fam},socket.SOCK_DGRAM); s.settimeout(1)\n\
         ok=0\n\
         for i in range({n}):\n\
         \x20   s.sendto(b'q%d'%i,('{host}',{port}))\n\
         \x20   try:\n\
         \x20       d,a=s.recvfrom(100); ok+=(d==b'q%d'%i)\n\
         \x20   except socket.timeout: pass\n\
         print(ok)\n"
    );
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-a", t.name),
            "python3",
            "-c",
            &script,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python client: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn xdp_sink_receives_every_datagram_of_a_paced_load_past_the_udp_stack() {
    let t = crate::topology!(xdp, "xs");
    let before = snmp_in(&t, "b");
    let sink = t.server(
        "b",
        &[
            "sink",
            "--backend",
            "xdp",
            "-b",
            "10.202.0.2:7001",
            "--duration",
            "4",
            "--json",
        ],
    );
    let load = t.udpring(
        "a",
        &[
            "load",
            "10.202.0.2:7001",
            "--match",
            "none",
            "--rate",
            "20000",
            "-t",
            "1",
            "--json",
        ],
    );
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let sent = json_of(&load)["sent"].as_u64().unwrap();
    let out = sink.finish();
    let v = json_of(&out);
    assert_eq!(sent, 20_000);
    assert_eq!(
        v["received"].as_u64(),
        Some(sent),
        "every datagram, counted once"
    );
    assert_eq!(v["sources"][0]["lost"].as_u64(), Some(0));
    // The kernel's UDP stack in B never saw them: they arrived as frames.
    let after = snmp_in(&t, "b");
    let seen = after["InDatagrams"] - before["InDatagrams"];
    assert!(seen < 100, "the kernel's UDP stack received {seen} of them");
}

#[test]
fn xdp_echo_answers_a_plain_client_and_udpring_load_over_v4_and_v6() {
    let t = crate::topology!(xdp, "xe");
    let (echo, notes) = t.server_noted(
        "b",
        &[
            "echo",
            "--backend",
            "xdp",
            "-b",
            "[::]:7000",
            "--iface",
            "x1",
            "-w",
            "1",
            "--duration",
            "6",
            "--json",
        ],
    );
    // veth has no zero-copy: the fallback is taken and said.
    assert!(
        notes.contains("copy mode: the driver refused zero-copy"),
        "{notes}"
    );
    assert_eq!(python_client(&t, "10.202.0.2:7000", 50), 50, "IPv4");
    assert_eq!(python_client(&t, "[fd00:202::2]:7000", 50), 50, "IPv6");
    for target in ["10.202.0.2:7000", "[fd00:202::2]:7000"] {
        let load = t.udpring(
            "a",
            &["load", target, "--mode", "ping", "-n", "2000", "--json"],
        );
        assert!(
            load.status.success(),
            "{}",
            String::from_utf8_lossy(&load.stderr)
        );
        let r = json_of(&load);
        assert_eq!(r["received"].as_u64(), Some(2000), "{target}: {r}");
    }
    let out = echo.finish();
    let v = json_of(&out);
    let s = &v["stats"];
    let s = if s.is_object() { s } else { &v };
    let rx = s["xdp_rx"].as_u64().unwrap();
    let tx = s["xdp_tx"].as_u64().unwrap();
    assert!(rx >= 4100, "frames received through the XDP socket: {rx}");
    // Answers left as frames, except the few sent before the kernel knew
    // the neighbour (through the socket, counted).
    let via = s["xdp_tx_via_socket"].as_u64().unwrap();
    assert_eq!(tx + via, s["sent"].as_u64().unwrap(), "{v}");
    assert!(tx >= 4000, "answers as frames: {tx} (via socket {via})");
    assert_eq!(s["xdp_bad_checksums"].as_u64(), Some(0));
    assert_eq!(
        s["slots_out"].as_u64(),
        Some(0),
        "every slot home after the run"
    );
}

#[test]
fn xdp_passes_arp_ping_and_other_ports_and_detaches_when_killed() {
    let t = crate::topology!(xdp, "xp");
    let b = format!("{}-b", t.name);
    let a = format!("{}-a", t.name);
    // A kernel socket on another port of B, to show it still gets its datagrams.
    let mut other = t.spawn(
        "b",
        &[
            "echo",
            "--backend",
            "mmsg",
            "-b",
            "10.202.0.2:7010",
            "-w",
            "1",
            "-q",
        ],
    );
    let mut echo = t.server(
        "b",
        &[
            "echo",
            "--backend",
            "xdp",
            "-b",
            "10.202.0.2:7000",
            "-w",
            "1",
        ],
    );
    assert!(
        attached(&t),
        "the program is attached while the server runs"
    );
    // Forget every neighbour: ARP (and neighbour discovery) must cross again.
    for ns in [&a, &b] {
        let ok = Command::new("ip")
            .args(["-n", ns, "neigh", "flush", "all"])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    for ping in [
        vec!["-c", "2", "-W", "2", "10.202.0.2"],
        vec!["-6", "-c", "2", "-W", "2", "fd00:202::2"],
    ] {
        let ok = Command::new("ip")
            .args(["netns", "exec", &a, "ping", "-q"])
            .args(&ping)
            .status()
            .unwrap();
        assert!(ok.success(), "ping {ping:?} through the port filter");
    }
    assert_eq!(
        python_client(&t, "10.202.0.2:7010", 10),
        10,
        "another port: the kernel's"
    );
    assert_eq!(
        python_client(&t, "10.202.0.2:7000", 10),
        10,
        "ours: the XDP socket's"
    );
    // Killed, it leaves nothing attached (the link closes with the process).
    echo.0.kill().unwrap();
    echo.0.wait().unwrap();
    let gone = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        !attached(&t)
    });
    assert!(gone, "the program is detached after the process is killed");
    let _ = other.0.kill();
}

#[test]
fn xdp_refuses_what_it_cannot_do_with_a_reason() {
    let t = crate::topology!(xdp, "xr");
    let echo = ["echo", "--backend", "xdp", "--duration", "1", "-b"];
    let load = [
        "load",
        "10.202.0.2:7000",
        "--backend",
        "xdp",
        "--match",
        "none",
        "-n",
        "10",
    ];
    let refusals: [(&str, Vec<&str>, &str); 4] = [
        ("b", [&echo[..], &["0.0.0.0:7000"]].concat(), "--iface"),
        ("b", [&echo[..], &["127.0.0.1:7000"]].concat(), "loopback"),
        (
            "b",
            [&echo[..], &["10.202.0.2:7000", "-w", "2", "--no-pin"]].concat(),
            "receive queue",
        ),
        ("a", [&load[..], &["--gso", "8"]].concat(), "--gso"),
    ];
    for (ns, args, why) in refusals {
        let out = t.udpring(ns, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(why),
            "{args:?}: {err}"
        );
    }
    // Without root (nobody, no capabilities): the reason, not a bare EPERM.
    let nobody = Command::new("ip")
        .args(["netns", "exec", &format!("{}-b", t.name)])
        .args([
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
        ])
        .args(["--inh-caps=-all", env!("CARGO_BIN_EXE_udpring")])
        .args([
            "echo",
            "--backend",
            "xdp",
            "-b",
            "10.202.0.2:7000",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&nobody.stderr);
    assert!(
        !nobody.status.success() && err.contains("needs root"),
        "{err}"
    );
}

#[test]
fn xdp_is_chosen_by_udpring_backend_like_the_others() {
    let t = crate::topology!(xdp, "xb");
    let mut c = t.command(
        "b",
        &[
            "echo",
            "-b",
            "10.202.0.2:7000",
            "-w",
            "1",
            "--duration",
            "2",
        ],
    );
    let k = crate::topo::KillOnDrop(
        c.env("UDPRING_BACKEND", "xdp")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(700));
    assert_eq!(python_client(&t, "10.202.0.2:7000", 5), 5);
    let out = k.finish();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("backend xdp") && text.contains("xdp-rx 5"),
        "{text}"
    );
}

/// Runs Python in A with a raw frame builder for UDP to B's port
/// (`frame(payload, bad_sum=False, ip_len_extra=0, vlan=None, src=A,
/// to_mac=B's)`) and an
/// `AF_PACKET` socket `s` on x0; `body` uses them.
fn raw_in_a(t: &Topology, port: u16, body: &str) -> String {
    let py = format!("{PRELUDE}{body}");
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            &format!("{}-a", t.name),
            "python3",
            "-c",
            &py,
        ])
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
fn xdp_fanout_relays_as_frames_past_the_udp_stack() {
    let t = crate::topology!(xdp, "xf");
    let sink = t.server(
        "a",
        &["sink", "-b", "10.202.0.1:7001", "--duration", "4", "--json"],
    );
    let before = snmp_in(&t, "b");
    let relay = t.server(
        "b",
        &[
            "fanout",
            "--listen",
            "10.202.0.2:7000",
            "--to",
            "10.202.0.1:7001",
            "--backend",
            "xdp",
            "-w",
            "1",
            "--duration",
            "3",
            "--json",
        ],
    );
    // The relay's first copy may go through its socket while B resolves A.
    let load = t.udpring(
        "a",
        &[
            "load",
            "10.202.0.2:7000",
            "--match",
            "none",
            "--rate",
            "10000",
            "-t",
            "1",
            "--json",
        ],
    );
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let f = json_of(&relay.finish());
    let s = json_of(&sink.finish());
    assert_eq!(f["received"].as_u64(), Some(10_000), "{f}");
    assert_eq!(
        s["received"].as_u64(),
        Some(10_000),
        "every copy arrived: {s}"
    );
    let after = snmp_in(&t, "b");
    let (rx, tx) = (
        after["InDatagrams"] - before["InDatagrams"],
        after["OutDatagrams"] - before["OutDatagrams"],
    );
    assert!(
        rx < 100 && tx < 100,
        "B's UDP stack saw {rx} in and {tx} out of 10,000 each way"
    );
}

#[test]
fn xdp_runs_a_worker_per_queue_and_answers_every_flow() {
    let t = crate::topology!(xdp2, "xq");
    let (echo, banner) = t.server_noted(
        "b",
        &[
            "echo",
            "--backend",
            "xdp",
            "-b",
            "10.202.0.2:7000",
            "--no-pin",
            "--duration",
            "4",
            "--json",
        ],
    );
    // Two queues: two workers by default, each with its queue's socket.
    assert!(banner.contains("2 workers"), "{banner}");
    let load = t.udpring(
        "a",
        &[
            "load",
            "10.202.0.2:7000",
            "--mode",
            "ping",
            "--flows",
            "16",
            "-w",
            "1",
            "-n",
            "3200",
            "--json",
        ],
    );
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    let r = json_of(&load);
    assert_eq!(r["received"], r["sent"], "{r}");
    let v = json_of(&echo.finish());
    let (rx, got) = (
        v["xdp_rx"].as_u64().unwrap(),
        v["received"].as_u64().unwrap(),
    );
    assert!(
        rx > 0 && rx == got,
        "every datagram through an XDP socket: {v}"
    );
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
