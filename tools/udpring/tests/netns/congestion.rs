//! Congested links: an echo whose replies leave through a slow queue
//! discipline keeps receiving and stops in bounded time, and what a relay
//! could not send is counted where it was going.

use std::io::Read;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use crate::topo::{Topology, json_of, sh_in};

/// Datagrams a document says did not go out: refused by errno, given up
/// while blocked, cancelled at the stop.
fn not_sent(v: &serde_json::Value) -> u64 {
    let refused: u64 = v["send_errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    refused + v["send_blocked"].as_u64().unwrap() + v["cancelled"].as_u64().unwrap()
}

/// An 80 kbit/s token bucket on `ns`'s e0 that holds `latency` of traffic.
fn slow_link(topo: &Topology, ns: &str, latency: &str) {
    sh_in(
        topo,
        ns,
        &format!("tc qdisc add dev e0 root tbf rate 80kbit burst 1600 latency {latency}"),
    );
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
    let _turn = crate::topo::paced_flow();
    let topo = crate::topology!(lan, tag);
    slow_link(&topo, "h2", if full_socket { "1s" } else { "50ms" });
    let mut args = crate::util::words("echo --bind 0.0.0.0:9000 -w 1 -q --json --backend");
    args.push(backend);
    if full_socket {
        args.extend(["--send-buffer", "1"]);
    }
    let mut echo = topo.server("h2", &args);
    const N: u64 = 20_000;
    let out = topo.udpring(
        "h1",
        &crate::util::words(
            "load 10.201.0.2:9000 --rate 20000 -n 20000 -s 1000 --warmup 0 --drain 0.2 -q --json",
        ),
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
    crate::util::vocab::check_any(&t);
    crate::util::vocab::check("echo", &t);
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
    let not_sent = not_sent(&t);
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

/// A relay on h2 whose copies to h1 leave through the slow link with the
/// kernel's smallest send buffer, flooded from h3: each relay is
/// forwarded, failed, given up or cancelled, counted against the
/// destination it was going to; none is counted as forwarded that did not
/// leave.
#[test]
fn a_relay_counts_what_a_congested_destination_did_not_get() {
    let _turn = crate::topo::paced_flow();
    let topo = crate::topology!(lan, "cf");
    slow_link(&topo, "h2", "1s");
    let relay = topo.server(
        "h2",
        &crate::util::words(
            "fanout --listen 10.201.0.2:6100 --to 10.201.0.1:6101 -w 1 --send-buffer 1 \
             --duration 2 -q --json",
        ),
    );
    let out = topo.udpring(
        "h3",
        &crate::util::words(
            "load 10.201.0.2:6100 --match none --rate 20000 -n 10000 -s 1000 --warmup 0 -q --json",
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let v = json_of(&relay.finish());
    crate::util::vocab::check("fanout", &v);
    let d = &v["destinations"][0];
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert!(n(d, "send_blocked") > 0, "the link held sends back: {v}");
    assert_eq!(
        n(d, "forwarded"),
        n(&v, "sent"),
        "forwarded is what left: {v}"
    );
    assert_eq!(
        n(d, "forwarded") + n(d, "failed") + n(d, "send_blocked") + n(d, "cancelled"),
        n(&v, "received"),
        "every relay accounted for: {v}"
    );
    assert_eq!(n(d, "cancelled"), n(&v, "cancelled"), "{v}");
    assert_eq!(n(d, "send_blocked"), n(&v, "send_blocked"), "{v}");
}

/// `udpring LINE` on h1, whose e0 is an 80 kbit/s token bucket that
/// queues whatever it is given (30 MB): a sender fills its socket's send
/// buffer and waits. Its output and JSON (checked against the vocabulary
/// for `command`); `None` where no topology can be built.
fn on_a_full_link(
    tag: &str,
    line: &str,
    command: &str,
) -> Option<(std::process::Output, serde_json::Value)> {
    let _turn = crate::topo::paced_flow();
    let topo = crate::topo::Topology::lan(tag)?;
    sh_in(
        &topo,
        "h1",
        "tc qdisc add dev e0 root tbf rate 80kbit burst 1600 limit 30000000",
    );
    let out = topo.udpring("h1", &crate::util::words(line));
    let v = json_of(&out);
    crate::util::vocab::check(command, &v);
    Some((out, v))
}

/// A paced load on a full link: the sends the engine gives up are in the
/// report, not only in what never arrived.
#[test]
fn a_load_says_what_it_gave_up_on_a_full_link() {
    let Some((out, v)) = on_a_full_link(
        "cl",
        "load 10.201.0.2:9 --match none --rate 20000 -t 2 -s 1000 --warmup 0 --backend mmsg -q \
         --json",
        "load",
    ) else {
        return;
    };
    let n = |k: &str| v[k].as_u64().unwrap();
    assert!(n("send_blocked") > 0, "{v}");
    assert!(
        n("sent_bufs") + n("send_blocked") <= n("sent"),
        "given up, not taken by the kernel: {v}"
    );
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "{text}");
}

/// A counted `mcast send` on a full link: what it asked is sent, refused,
/// given up, cancelled at the stop, or never handed over (`unsent`).
#[test]
fn a_counted_mcast_send_accounts_for_every_datagram_on_a_full_link() {
    let Some((_, v)) = on_a_full_link(
        "cs",
        "mcast send 239.1.1.1:5000 --rate 20000 -c 20000 -s 1000 -q --json",
        "mcast send",
    ) else {
        return;
    };
    let n = |k: &str| v[k].as_u64().unwrap();
    assert!(n("unsent") > 0, "the link could not keep the rate: {v}");
    assert_eq!(n("sent") + not_sent(&v) + n("unsent"), 20_000, "{v}");
}
