//! Issue 9 across hosts: forged datagrams that would start packet loops
//! (raw sockets, inside the LAN the test builds), broadcast, a relay that
//! listens on loopback and sends to the LAN, and a stop under a congested
//! link.

use std::io::Read;
use std::net::{SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use crate::topo::{KillOnDrop, Topology, forge_udp4, json_of, sh_in};

fn server(topo: &Topology, ns: &str, args: &[&str]) -> KillOnDrop {
    topo.server(ns, args)
}

fn v4(s: &str) -> SocketAddrV4 {
    s.parse().unwrap()
}

#[test]
fn forged_datagrams_start_no_loop_and_broadcasts_get_no_answer() {
    let Some(topo) = Topology::lan("gd") else {
        return;
    };
    let echo = |ns| {
        server(
            &topo,
            ns,
            &[
                "echo",
                "--bind",
                "0.0.0.0:9000",
                "-w",
                "1",
                "-q",
                "--duration",
                "3",
                "--json",
            ],
        )
    };
    let (e2, e3) = (echo("h2"), echo("h3"));
    // A pong on h1 that also hears unicast on its port.
    let pong = topo
        .command(
            "h1",
            &[
                "mcast",
                "pong",
                "239.1.2.3:5000",
                "--duration",
                "3",
                "--json",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    topo.run_in("h2", || {
        // From the echo to itself, on loopback.
        forge_udp4(v4("127.0.0.1:9000"), v4("127.0.0.1:9000"), b"self");
    });
    topo.run_in("h1", || {
        // h3's echo to h2's: two twins set against each other.
        forge_udp4(v4("10.201.0.3:9000"), v4("10.201.0.2:9000"), b"twins");
        // h2's echo to the pong, by unicast: an echo and a pong.
        forge_udp4(v4("10.201.0.2:9000"), v4("10.201.0.1:5000"), b"pong me");
        // The subnet's broadcast address, to both echoes.
        let b = UdpSocket::bind("10.201.0.1:0").unwrap();
        b.set_broadcast(true).unwrap();
        b.send_to(b"everyone", "10.201.0.255:9000").unwrap();
    });
    let t2 = json_of(&e2.finish());
    let t3 = json_of(&e3.finish());
    let p = pong.wait_with_output().unwrap();
    let pong_err = String::from_utf8_lossy(&p.stderr);
    // Not one answer anywhere: each forged datagram was the only one.
    assert_eq!(
        (t2["sent"].as_u64(), t3["sent"].as_u64()),
        (Some(0), Some(0)),
        "{t2} {t3}"
    );
    assert_eq!(t2["received_bufs"], 3, "self, twin, broadcast: {t2}");
    assert_eq!(t2["guard_loop"], 2, "{t2}");
    assert_eq!(t2["guard_broadcast"], 1, "{t2}");
    assert_eq!(t3["received_bufs"], 1, "only the broadcast: {t3}");
    assert_eq!(t3["guard_broadcast"], 1, "{t3}");
    assert!(
        pong_err.contains("1 datagrams not answered"),
        "the unicast 'ping' was not answered: {pong_err}"
    );
}

#[test]
fn a_relay_listening_on_loopback_reaches_the_lan() {
    let Some(topo) = Topology::lan("gf") else {
        return;
    };
    let sink = topo.run_in("h1", || {
        let s = UdpSocket::bind("10.201.0.1:7000").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    });
    let relay = server(
        &topo,
        "h2",
        &[
            "fanout",
            "--listen",
            "127.0.0.1:6000",
            "--to",
            "10.201.0.1:7000",
            "-w",
            "1",
            "--duration",
            "2",
            "-q",
            "--json",
        ],
    );
    topo.run_in("h2", || {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            c.send_to(&[i], "127.0.0.1:6000").unwrap();
        }
    });
    let mut buf = [0u8; 8];
    for _ in 0..10 {
        sink.recv_from(&mut buf)
            .expect("relayed from loopback to the LAN");
    }
    let t = json_of(&relay.finish());
    assert_eq!(t["destinations"][0]["forwarded"], 10, "{t}");
    assert_eq!(t["send_errors"], serde_json::json!({}), "{t}");
}

/// An echo on h2 whose replies leave through an 80 kbit/s queue
/// discipline, flooded from h1: it keeps receiving, and a SIGTERM stops it
/// in bounded time with totals, the port free at once.
///
/// `full_socket`: a queue discipline that holds a second of traffic and a
/// send buffer of the kernel's minimum, so sends wait for buffer space
/// (EAGAIN; in the kernel for uring) instead of being refused by the queue
/// discipline (ENOBUFS).
fn congested_stop(backend: &str, tag: &str, full_socket: bool) {
    let Some(topo) = Topology::lan(tag) else {
        return;
    };
    let latency = if full_socket { "1s" } else { "50ms" };
    sh_in(
        &topo,
        "h2",
        &format!("tc qdisc add dev e0 root tbf rate 80kbit burst 1600 latency {latency}"),
    );
    let mut args = vec![
        "echo",
        "--bind",
        "0.0.0.0:9000",
        "-w",
        "1",
        "-q",
        "--backend",
        backend,
        "--json",
    ];
    if full_socket {
        args.extend(["--send-buffer", "1"]);
    }
    let mut echo = server(&topo, "h2", &args);
    const N: u64 = 20_000;
    let out = topo.udpring(
        "h1",
        &[
            "load",
            "10.201.0.2:9000",
            "--rate",
            "20000",
            "-n",
            "20000",
            "-s",
            "1000",
            "--warmup",
            "0",
            "--drain",
            "0.2",
            "-q",
            "--json",
        ],
    );
    let sent = json_of(&out)["sent"].as_u64().unwrap();
    assert_eq!(sent, N);
    let start = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(echo.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = echo.0.wait().unwrap();
    let took = start.elapsed();
    let mut text = String::new();
    echo.0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let t: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    crate::common::vocab::check("echo", &t);
    eprintln!("{backend}: stopped in {took:?}: {t}");
    assert!(status.success(), "{backend}: {status:?} {t}");
    assert!(
        took < Duration::from_secs(3),
        "{backend}: a stop took {took:?}"
    );
    // It went on receiving: what reached it was taken in, not dropped by
    // the kernel while sends waited.
    let received = t["received"].as_u64().unwrap();
    assert!(
        received * 10 >= N * 9,
        "{backend}: received {received} of {N}: {t}"
    );
    // What the link could not carry is said: refused by the queue
    // discipline (ENOBUFS), given up while blocked, or cancelled at the stop.
    let refused: u64 = t["send_errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    let not_sent = refused + t["send_blocked"].as_u64().unwrap() + t["cancelled"].as_u64().unwrap();
    assert!(
        not_sent > 0,
        "{backend}: the link could not carry the replies: {t}"
    );
    assert_eq!(
        t["sent"].as_u64().unwrap() + not_sent,
        received,
        "{backend}: every reply sent or counted as not sent: {t}"
    );
    assert_eq!(t["slots_out"], 0, "{t}");
    topo.run_in("h2", || {
        UdpSocket::bind("0.0.0.0:9000").expect("the port is free once the echo exits");
    });
}

#[test]
fn a_congested_link_does_not_stall_or_hang_uring() {
    if udpring::uring_support().is_ok() {
        congested_stop("uring", "cu", false);
        congested_stop("uring", "cU", true);
    }
}

#[test]
fn a_congested_link_does_not_stall_or_hang_mmsg() {
    congested_stop("mmsg", "cm", false);
    congested_stop("mmsg", "cM", true);
}
