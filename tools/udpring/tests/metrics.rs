//! `--metrics ADDR` serves the engine's counters in
//! Prometheus' text format. The scrape is parsed by the `prometheus-client`
//! PyPI package's own parser (installed by `.ci/run`) and its numbers are
//! held against the `--json` totals. Loopback only.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{have, vocab};

/// Whether Python has `module`; skips (or fails under
/// `UDPRING_REQUIRE_PEERS=1`) without it.
fn have_py(module: &str) -> bool {
    if !have("python3") {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("UDPRING_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("python module {module} is missing and UDPRING_REQUIRE_PEERS=1");
        }
        eprintln!("skipping: pip install {module}");
    }
    ok
}

fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// Sums every sample of the scrape by sample name, with prometheus-client's
/// parser (which refuses text that is not valid exposition format).
const PARSE: &str = r#"
import sys, json
from prometheus_client.parser import text_string_to_metric_families
sums = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        sums[s.name] = sums.get(s.name, 0) + s.value
print(json.dumps(sums))
"#;

/// The scrape's samples summed by name, by prometheus-client's parser;
/// text it refuses fails the test.
fn parse(body: &str) -> serde_json::Value {
    let mut py = Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    py.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = py.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser refused the scrape:\n{body}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_scrape_parses_and_matches_the_json_totals() {
    if !have_py("prometheus_client") {
        return;
    }
    let mut echo = Command::new(env!("CARGO_BIN_EXE_udpring"))
        .args(util::words("echo --bind 127.0.0.1:0 -w 2 -q --duration 4"))
        .args(["--json", "--metrics", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(echo.stderr.take().unwrap());
    let udp = util::listening_addr(&mut err);
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let metrics: SocketAddr = line
        .trim()
        .strip_prefix("udpring: metrics on http://")
        .and_then(|s| s.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    // 200 datagrams, every echo read back (the socket stays open, so no
    // send of the echo fails).
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..200 {
        s.send_to(b"count me", udp).unwrap();
        s.recv(&mut [0u8; 64]).unwrap();
    }
    // A client that connects and says nothing holds the endpoint a second
    // at most.
    let _silent = TcpStream::connect(metrics).unwrap();
    let t = Instant::now();
    let (head, mut body) = get(metrics, "/metrics");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    // A send is counted at its completion, which the worker may take a
    // moment after the echo reached us: scrape again until the figures
    // settle (or a second passes).
    let deadline = Instant::now() + Duration::from_secs(1);
    while parse(&body)["udpring_sent_total"] != 200.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        body = get(metrics, "/metrics").1;
    }
    let sums = parse(&body);
    assert_eq!(sums["udpring_received_total"], 200.0, "{sums}");
    assert_eq!(sums["udpring_sent_total"], 200.0, "{sums}");
    assert!(sums["udpring_slots"].as_f64().unwrap() > 0.0, "{sums}");
    // Per worker: one sample each.
    assert_eq!(body.matches("udpring_received_total{worker=").count(), 2);
    let (head, _) = get(metrics, "/other");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // The totals at exit say the same.
    let out = echo.wait_with_output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    vocab::check("echo", &v);
    assert_eq!(v["received"], 200, "{v}");
    assert_eq!(
        sums["udpring_bytes_received_total"].as_f64(),
        v["bytes_received"].as_f64()
    );
}

/// `load --metrics`: the run's figures while it runs, in a scrape
/// prometheus-client's parser takes; the replies counted are the RTT
/// summary's count, and the result at the end holds at least as many.
#[test]
fn a_load_serves_its_figures_while_it_runs() {
    if !have_py("prometheus_client") {
        return;
    }
    let echo = util::Server::echo();
    let mut load = Command::new(env!("CARGO_BIN_EXE_udpring"))
        .args(util::words(&format!(
            "load {} --rate 1000 -t 2.5 -i 0.2 --json --metrics 127.0.0.1:0",
            echo.addr
        )))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(load.stderr.take().unwrap());
    let metrics: SocketAddr = loop {
        let mut line = String::new();
        assert!(err.read_line(&mut line).unwrap() > 0, "no metrics line");
        if let Some(a) = line
            .trim()
            .strip_prefix("udpring: metrics on http://")
            .and_then(|x| x.strip_suffix("/metrics"))
        {
            break a.parse().unwrap();
        }
    };
    // Standard error is read to its end meanwhile (live lines).
    let drain = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = err.read_to_string(&mut rest);
        rest
    });
    std::thread::sleep(Duration::from_millis(1200));
    let (head, body) = get(metrics, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let sums = parse(&body);
    let f = |k: &str| sums[k].as_f64().unwrap_or_else(|| panic!("no {k}: {sums}"));
    let (sent, received) = (
        f("udpring_load_sent_total"),
        f("udpring_load_received_total"),
    );
    assert!(sent >= 500.0, "a second of 1000/s: {sums}");
    assert!(received <= sent && received >= sent - 50.0, "{sums}");
    assert_eq!(f("udpring_load_rtt_seconds_count"), received, "{sums}");
    assert!(f("udpring_load_unanswered") >= 0.0, "{sums}");
    assert_eq!(body.matches("quantile=").count(), 4, "{body}");
    assert!(
        body.contains(&format!("target=\"{}\"", echo.addr)),
        "{body}"
    );
    let out = load.wait_with_output().unwrap();
    let rest = drain.join().unwrap();
    assert!(out.status.success(), "{rest}");
    let v = util::json(&String::from_utf8_lossy(&out.stdout));
    assert!(v["sent"].as_f64().unwrap() >= sent, "{v}");
}

#[test]
fn a_metrics_address_in_use_is_an_error_before_the_run() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_udpring"))
        .args(util::words("echo --bind 127.0.0.1:0 -w 1 -q --duration 5"))
        .args(["--metrics", &addr])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--metrics") && err.contains("in use"), "{err}");
}

/// A client that sends a byte every 0.8 s held the endpoint for hours (a
/// timeout per read, one connection at a time): every scrape meanwhile
/// timed out. Now a connection has one second from its accept, and others
/// are served beside it: scrapes succeed while the slow client dribbles,
/// and a query string is taken.
#[test]
fn a_slow_client_does_not_hold_the_endpoint() {
    let echo = util::Server::start(&util::words(
        "echo --bind 127.0.0.1:0 -w 1 -q --duration 8 --metrics 127.0.0.1:0",
    ));
    // The second line of standard output... the banner said the UDP
    // address; the metrics address is on standard error.
    let metrics = metrics_addr(&echo);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let st = stop.clone();
    let slow = std::thread::spawn(move || {
        let mut c = TcpStream::connect(metrics).unwrap();
        let mut sent = 0;
        for b in b"GET /metrics HTTP/1.1\r\nHost: x\r\n" {
            if st.load(std::sync::atomic::Ordering::Relaxed) || c.write_all(&[*b]).is_err() {
                break;
            }
            sent += 1;
            std::thread::sleep(Duration::from_millis(800));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    for k in 0..4 {
        let t = Instant::now();
        let (head, body) = get(metrics, "/metrics?name[]=udpring_received_total");
        assert!(head.starts_with("HTTP/1.1 200"), "scrape {k}: {head}");
        assert!(body.contains("udpring_received_total"), "{body}");
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "scrape {k} waited {:?} behind the slow client",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = slow.join().unwrap();
    assert!(
        sent <= 3,
        "the slow client was cut off at its deadline: {sent} bytes"
    );
}

/// The metrics address a server said it serves on (standard error, after
/// its banner): `udpring: metrics on http://ADDR/metrics`.
fn metrics_addr(s: &util::Server) -> SocketAddr {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(a) = s.seen_err().lines().find_map(|l| {
            l.trim()
                .strip_prefix("udpring: metrics on http://")
                .and_then(|x| x.strip_suffix("/metrics"))
                .and_then(|x| x.parse().ok())
        }) {
            return a;
        }
        assert!(Instant::now() < deadline, "no metrics address said");
        std::thread::sleep(Duration::from_millis(20));
    }
}
