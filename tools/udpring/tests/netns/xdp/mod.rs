//! The xdp backend on a veth pair (A 10.202.0.1 / fd00:202::1, B .2 / ::2,
//! one queue per end, offloads off on both): frames reach udpring without
//! the kernel's UDP stack (its own counters say so), answers go back as
//! frames, the rest of the host keeps working, and nothing stays attached.

mod raw;

use std::process::Command;

use crate::topo::{KillOnDrop, Topology, json_of, udp_snmp};

/// The UDP counters of `/proc/net/snmp` in namespace `ns`.
fn snmp_in(t: &Topology, ns: &str) -> std::collections::HashMap<String, u64> {
    t.run_in(ns, udp_snmp)
}

/// `udpring echo --backend xdp` on 10.202.0.2:7000 in B for 3 s, one
/// worker, its result as JSON.
fn xdp_echo(t: &Topology) -> KillOnDrop {
    xdp_echo_for(t, "3")
}

/// [`xdp_echo`] for `secs` seconds (with --json, the banner and the notes
/// go to standard error, which is kept).
fn xdp_echo_for(t: &Topology, secs: &str) -> KillOnDrop {
    t.server(
        "b",
        &[&XDP_ECHO[..], &["--duration", secs, "--json"]].concat(),
    )
}

/// `udpring echo --backend xdp` on 10.202.0.2:7000, one worker.
const XDP_ECHO: [&str; 7] = [
    "echo",
    "--backend",
    "xdp",
    "-b",
    "10.202.0.2:7000",
    "-w",
    "1",
];

/// `ip link show x1` in B: whether an XDP program is attached.
fn attached(t: &Topology) -> bool {
    attached_to(t, "b", "x1")
}

/// `ip link show DEV` in `ns`: whether an XDP program is attached.
fn attached_to(t: &Topology, ns: &str, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["-n", &format!("{}-{ns}", t.name), "link", "show", dev])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// Waits (2 s at most) until a program is attached to x1 in B.
fn wait_attached(t: &Topology) {
    wait_attached_to(t, "b", "x1");
}

/// Waits (2 s at most) until a program is attached to `dev` in `ns`.
fn wait_attached_to(t: &Topology, ns: &str, dev: &str) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while !attached_to(t, ns, dev) {
        assert!(
            std::time::Instant::now() < until,
            "nothing attached to {dev}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
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
    let out = t
        .exec("a", "python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("python client: {}", String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn xdp_sink_receives_every_datagram_of_a_paced_load_past_the_udp_stack() {
    let _turn = crate::topo::paced_flow();
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
    let mut echo = t.server("b", &XDP_ECHO);
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
        let ok = t.exec("a", "ping").arg("-q").args(&ping).status().unwrap();
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
    let nobody = t
        .exec("b", "setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
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
    // A second xdp engine on an interface that has one: refused with why
    // (the kernel's EBUSY/EEXIST alone read "File exists"), the first kept.
    let first = xdp_echo(&t);
    wait_attached(&t);
    let out = t.udpring("b", &[&echo[..], &["10.202.0.2:7001"]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(1) && err.contains("attached there already"),
        "{err}"
    );
    assert!(attached(&t));
    drop(first);
}

/// An interface removed under a running xdp server and an xdp load (a
/// container's veth deleted, a driver unbound: both ends of the pair go)
/// ends each run with the reason and exit 1; the server idled on,
/// receiving nothing and saying nothing, until its end, and the load
/// printed the error alone, its figures lost.
#[test]
fn xdp_runs_whose_interface_is_removed_stop_and_say_why() {
    let t = crate::topology!(xdp, "xg");
    let echo = xdp_echo_for(&t, "15");
    wait_attached(&t);
    let load = t.spawn(
        "a",
        &[
            "load",
            "10.202.0.2:7000",
            "--backend",
            "xdp",
            "--iface",
            "x0",
            "--bind",
            "0.0.0.0:0",
            "-t",
            "15",
            // Counted from the first send: the interface goes before a
            // warm-up would be over (one run pulled it within the 0.2 s
            // default, and the figures rightly read 0 sent).
            "--warmup",
            "0",
            "--json",
        ],
    );
    wait_attached_to(&t, "a", "x0");
    // A moment of traffic before the interface goes (sends begin as soon
    // as the program is attached).
    std::thread::sleep(std::time::Duration::from_millis(200));
    crate::topo::sh_in(&t, "b", "ip link del x1");
    let out = echo.finish();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("worker 0 failed: xdp backend: x1 is gone")
            && err.contains("stopped with errors"),
        "{err}"
    );
    let out = load.finish();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let v = json_of(&out);
    let why = v["invalid_because"].as_str().unwrap_or_default();
    assert!(
        v["valid"] == false && why.contains("x0 is gone") && v["sent"].as_u64() > Some(0),
        "{v}"
    );
    assert!(err.contains("x0 is gone"), "{err}");
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

#[test]
fn xdp_fanout_relays_as_frames_past_the_udp_stack() {
    let _turn = crate::topo::paced_flow();
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
    let _turn = crate::topo::paced_flow();
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
