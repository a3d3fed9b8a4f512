//! The request/response client: IDs, backoff, "server looks down", and
//! replies with the wrong ID or from the wrong address discarded.

mod util;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use udpring::{Datagram, Engine, Handler, Transport};
use udpring_cli::apps::echo::Echo;
use udpring_cli::apps::header::Header;
use udpring_cli::apps::reqresp::{Backoff, Outcome, RequestClient};
use util::*;

fn backoff(attempts: u32) -> Backoff {
    Backoff {
        initial: Duration::from_millis(20),
        factor: 2.0,
        max: Duration::from_millis(80),
        attempts,
    }
}

#[test]
fn replies_from_an_echo_server_need_one_attempt() {
    let engine = Engine::start(config(udpring::Backend::Mmsg, false), |_| Echo::new()).unwrap();
    let mut c = RequestClient::new(engine.local_addr(), backoff(3), 100).unwrap();
    for _ in 0..5 {
        match c.request().unwrap() {
            Outcome::Reply { attempts, len, .. } => assert_eq!((attempts, len), (1, 100)),
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(
        (c.stats.replies, c.stats.retransmits, c.stats.down),
        (5, 0, 0)
    );
    stop_clean(engine);
}

/// An echo whose buffers are smaller than the request sends back its
/// first part: a reply, and counted as cut.
#[test]
fn a_reply_shorter_than_the_request_is_counted_as_truncated() {
    let mut cfg = config(udpring::Backend::Mmsg, false);
    cfg.slot_size = 2048;
    let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
    let mut c = RequestClient::new(engine.local_addr(), backoff(3), 3000).unwrap();
    match c.request().unwrap() {
        Outcome::Reply { len, .. } => assert!(len < 3000, "{len}"),
        o => panic!("{o:?}"),
    }
    let mut whole = RequestClient::new(engine.local_addr(), backoff(3), 1000).unwrap();
    assert!(matches!(
        whole.request().unwrap(),
        Outcome::Reply { len: 1000, .. }
    ));
    assert_eq!((c.stats.replies, c.stats.truncated), (1, 1));
    assert_eq!((whole.stats.replies, whole.stats.truncated), (1, 0));
    stop_clean(engine);
}

/// A "server" that never answers and notes when the kernel received each
/// request (its receive timestamp: a thread's wake-up, late by whatever
/// else the machine runs, would make gaps look shorter than they were).
struct Silent(Arc<Mutex<Vec<SystemTime>>>);

impl Handler for Silent {
    fn on_datagram(&mut self, dgram: Datagram<'_>, _tx: &mut Transport<'_>) {
        let at = dgram.rx_timestamp().expect("rx timestamps are on");
        self.0.lock().unwrap().push(at);
    }
}

#[test]
fn total_loss_follows_the_backoff_schedule_then_the_server_looks_down() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut cfg = config(udpring::Backend::Mmsg, false);
    cfg.rx_timestamps = true;
    let s2 = seen.clone();
    let sink = Engine::start(cfg, move |_| Silent(s2.clone())).unwrap();
    let b = backoff(5);
    let mut c = RequestClient::new(sink.local_addr(), b, 64).unwrap();
    let out = c.request().unwrap();
    stop_clean(sink);
    let arrivals = seen.lock().unwrap().clone();
    let Outcome::ServerDown {
        attempts, waited, ..
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(attempts, 5);
    assert_eq!(arrivals.len(), 5, "five sends of the same request");
    assert!(
        waited >= b.total(),
        "gave up only after the whole schedule: {waited:?}"
    );
    // Retransmissions never come before their delay is over (a timer cannot
    // fire early; later is the machine's business, not checked).
    let delays = b.delays();
    for k in 1..arrivals.len() {
        let gap = arrivals[k].duration_since(arrivals[k - 1]).unwrap();
        assert!(
            gap + Duration::from_millis(1) >= delays[k - 1],
            "gap {k}: {gap:?} < {:?}",
            delays[k - 1]
        );
    }
    assert_eq!((c.stats.sent, c.stats.retransmits, c.stats.down), (5, 4, 1));
}

#[test]
fn port_unreachable_from_the_server_ends_the_request_at_its_first_send() {
    for ip in ["127.0.0.1", "::1"] {
        let closed = unused_addr(ip);
        // A schedule of 10 s: only the ICMP error can end it early.
        let b = Backoff {
            initial: Duration::from_secs(5),
            factor: 1.0,
            max: Duration::from_secs(5),
            attempts: 2,
        };
        let mut c = RequestClient::new(closed, b, 64).unwrap();
        let before = kernel_counters();
        let out = c.request().unwrap();
        // Where the first send or its ICMP error went, if not answered
        // (one run in many hundreds saw a second send needed).
        let moved = counters_moved(&before, &kernel_counters());
        let Outcome::Unreachable {
            attempts, error, ..
        } = out
        else {
            panic!("{out:?}; kernel counters moved: {moved}")
        };
        assert_eq!(attempts, 1, "{ip}; kernel counters moved: {moved}");
        assert_eq!(
            error,
            udpring::ErrorEvent::ConnectionRefused { peer: Some(closed) },
            "{ip}"
        );
        let s = c.stats;
        assert_eq!((s.sent, s.unreachable, s.down, s.replies), (1, 1, 0, 0));
    }
}

#[test]
fn wrong_ids_and_wrong_addresses_are_discarded_and_retransmission_recovers() {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let impostor = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        // First copy: answer with a wrong ID, then the right ID from another
        // address, and nothing valid: the client must retransmit.
        let (n, from) = server.recv_from(&mut buf).unwrap();
        let mut wrong = buf[..n].to_vec();
        let seq = Header::new_checked(&wrong[..]).unwrap().seq();
        wrong[16..24].copy_from_slice(&(seq ^ 1).to_be_bytes());
        server.send_to(&wrong, from).unwrap();
        impostor.send_to(&buf[..n], from).unwrap();
        server.send_to(b"short", from).unwrap();
        // Second copy: the real answer.
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(&buf[..n], from).unwrap();
    });
    let mut c = RequestClient::new(addr, backoff(4), 64).unwrap();
    let out = c.request().unwrap();
    t.join().unwrap();
    let Outcome::Reply { attempts, .. } = out else {
        panic!("{out:?}")
    };
    assert_eq!(attempts, 2);
    let s = c.stats;
    assert_eq!(
        (
            s.wrong_id,
            s.wrong_addr,
            s.malformed,
            s.retransmits,
            s.replies
        ),
        (1, 1, 1, 1, 1),
        "{s:?}"
    );
}

/// `udpring ping` of three requests carrying `payload` (hex), matched by
/// `how`, back to back: its JSON.
fn ping_three(to: std::net::SocketAddr, payload: &str, how: &str) -> serde_json::Value {
    let to = to.to_string();
    run_json(&[
        "ping",
        &to,
        "--payload",
        payload,
        "--match",
        how,
        "-c",
        "3",
        "-i",
        "0",
        "--json",
    ])
}

/// The seed chapter's `udp_remote.py` server, made deterministic: it drops
/// every other datagram ("pretending to drop packet"), reads the rest as
/// ASCII (a binary request kills it) and answers with their length.
const CHAPTER_SERVER: &str = "    n = globals().get('n', 0) + 1
    if n % 2 == 1:
        continue
    text = q.decode('ascii')
    s.sendto('Your data was {} bytes long'.format(len(q)).encode('ascii'), a)";

#[test]
fn ping_with_a_payload_talks_to_a_service_that_is_not_an_echo() {
    if !have("python3") {
        return;
    }
    let py = PyResponder::start(CHAPTER_SERVER);
    let hello: String = b"This is another message"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let v = ping_three(py.addr, &hello, "flow");
    // Each request's first send is dropped, its retransmission answered
    // with a text of the server's own.
    assert_eq!(
        counts(&v, ["requests", "replies", "retransmits", "down", "sent"]),
        [Some(3), Some(3), Some(3), Some(0), Some(6)],
        "{v}"
    );
    assert_eq!(v["match"], "flow", "{v}");
    assert_eq!(
        v["truncated"], 0,
        "a service's answer is not a cut echo: {v}"
    );
}

/// `ping --expect`: every reply is checked for bytes. The chapter server's
/// "Your data was N bytes long" passes a check for "Your data"; against
/// one for "OK" each reply still answers its request, and is shown on
/// its line, counted, and named in the exit-1 error.
#[test]
fn ping_expect_shows_and_counts_replies_without_the_bytes() {
    if !have("python3") {
        return;
    }
    let py = PyResponder::start(CHAPTER_SERVER);
    let to = py.addr.to_string();
    let hex = udpring_cli::apps::load::expect::hex;
    let hello = hex(b"This is another message");
    let ping = |expect: &str, more: &[&str]| {
        let args = [
            "ping",
            &to,
            "--payload",
            &hello,
            "--match",
            "flow",
            "-c",
            "2",
        ];
        run(&[&args[..], &["-i", "0", "--expect", expect], more].concat())
    };
    let (code, out, err) = ping(&format!("0:{}", hex(b"Your data")), &[]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("0 of the replies lacked"), "{out}");
    // The other forms: anywhere in the reply, and masked ('Y' is 0x59:
    // its high four bits are 5, not 6).
    for (check, passes) in [
        (format!("any:{}", hex(b"23 bytes")), true),
        (format!("any:{}", hex(b"24 bytes")), false),
        ("0:50/f0".to_string(), true),
        ("0:60/f0".to_string(), false),
    ] {
        let (code, out, err) = ping(&check, &["--json"]);
        assert_eq!(code, if passes { 0 } else { 1 }, "{check}: {out} {err}");
        let v = json(&out);
        assert_eq!(
            v["unexpected"].as_u64(),
            Some(if passes { 0 } else { 2 }),
            "{check}: {v}"
        );
        assert_eq!(v["expect"], serde_json::json!([check]), "{v}");
    }
    let (code, out, err) = ping("0:4f4b", &[]);
    assert_eq!(code, 1, "{out} {err}");
    let answer = b"Your data was 23 bytes long";
    let shown = format!(
        "(unexpected: {} \"Your data was 23 bytes long\")",
        hex(answer)
    );
    assert_eq!(out.matches(&shown).count(), 2, "{out}");
    assert!(out.contains("2 of the replies lacked"), "{out}");
    assert!(
        err.contains("2 of 2 replies from") && err.contains("lacked --expect 0:4f4b"),
        "{err}"
    );
    let (code, out, _) = ping("0:4f4b", &["--json"]);
    assert_eq!(code, 1);
    let v = json(&out);
    assert_eq!(
        counts(&v, ["replies", "unexpected"]),
        [Some(2), Some(2)],
        "{v}"
    );
    assert_eq!(v["expect"], serde_json::json!(["0:4f4b"]), "{v}");
}

#[test]
fn ping_matching_by_id_discards_a_reply_with_another_id() {
    if !have("python3") {
        return;
    }
    // Copies the request's first two bytes, after a decoy with another ID.
    let py = PyResponder::start(
        "    s.sendto(bytes([q[0] ^ 0xff]) + q[1:2] + b' stale', a)
    s.sendto(q[:2] + b' value', a)",
    );
    let v = ping_three(py.addr, "0000474554206b6579", "id:0:2");
    assert_eq!(
        counts(&v, ["replies", "unmatched", "retransmits", "invalid"]),
        [Some(3), Some(3), Some(0), Some(0)],
        "{v}"
    );
    assert_eq!(v["match"], "id:0:2", "{v}");
}

#[test]
fn ping_says_how_payload_and_match_go_together() {
    assert_usage_errors(&[
        (
            &["ping", "127.0.0.1:9", "--payload", "00"],
            "say how replies match",
        ),
        (
            &["ping", "127.0.0.1:9", "--match", "flow"],
            "goes with --payload",
        ),
        (
            &["ping", "127.0.0.1:9", "--payload", "00", "--match", "none"],
            "waits for each reply",
        ),
        (
            &[
                "ping",
                "127.0.0.1:9",
                "--payload",
                "0000",
                "--match",
                "id:1:2",
            ],
            "ends past the 2-byte payload",
        ),
        (
            &["ping", "127.0.0.1:9", "--payload", "0g", "--match", "flow"],
            "not a hex digit",
        ),
    ]);
}

#[test]
fn a_request_may_be_as_large_as_its_family_carries() {
    // IPv6 has no IPv4 header inside the 64 KiB: 65527 bytes, whole.
    let echo = Server::start(&words(
        "echo --bind [::1]:0 -w 1 -q --slot-size 70000 --duration 5",
    ));
    let v = run_json(&[
        "ping",
        &echo.addr.to_string(),
        "-s",
        "65527",
        "-c",
        "1",
        "--json",
    ]);
    assert_eq!(
        counts(&v, ["replies", "truncated"]),
        [Some(1), Some(0)],
        "{v}"
    );
    assert_usage_errors(&[(
        &["ping", "127.0.0.1:9", "-s", "65527"],
        "size must be 32..65507",
    )]);
}
