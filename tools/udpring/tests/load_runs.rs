//! How a load run behaves against peers scripted for the purpose: bad
//! payload files and matches refused in one line, one-way datagrams into a
//! Python sink arriving as sent, a capture replayed in order, rate steps
//! finding a rate limiter's knee, a paced run that keeps its schedule when
//! half is lost, timeouts kept in the latency picture, `-q`, and Poisson
//! arrivals. All on loopback. The real services (NSD, memcached) are in `services.rs`.

mod util;

use util::{Peer, have, json, run, udpring};

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

#[test]
fn bad_payloads_and_matches_are_one_line_with_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("udpring-payloads-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("cut.bin");
    std::fs::write(&raw, [0u8, 9, 1, 2]).unwrap();
    let badq = dir.join("q.txt");
    std::fs::write(&badq, "www.example.com A\nwww.example.com\n").unwrap();
    let hexf = dir.join("p.hex");
    std::fs::write(&hexf, "# two\n00ff\n0g\n").unwrap();
    let zero = dir.join("zero.bin");
    std::fs::write(&zero, [0u8, 1, 7, 0, 0]).unwrap();
    let zero = zero.to_str().unwrap();
    let (raw, badq, hexf) = (
        raw.to_str().unwrap(),
        badq.to_str().unwrap(),
        hexf.to_str().unwrap(),
    );
    let cases: &[(&[&str], &str)] = &[
        (
            &["load", "127.0.0.1:9", "--payload", "abc", "--match", "flow"],
            "odd number",
        ),
        (
            &["load", "127.0.0.1:9", "--payload", "00ff"],
            "--match id:OFFSET:LEN",
        ),
        (&["load", "127.0.0.1:9", "--match", "id:0:9"], "1..8 bytes"),
        (
            &["load", "127.0.0.1:9", "--match", "id:0:2"],
            "needs a payload",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--payload",
                "00ff",
                "--match",
                "id:4:2",
            ],
            "at least 6 bytes",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--payload-file",
                raw,
                "--payload-format",
                "raw",
                "--match",
                "flow",
            ],
            "9 bytes announced",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--payload-file",
                hexf,
                "--match",
                "flow",
            ],
            "line 3",
        ),
        (&["load", "127.0.0.1:9", "--dns-queries", badq], "line 2"),
        (
            &["load", "127.0.0.1:9", "--dns-queries", "/nonexistent/q"],
            "/nonexistent/q",
        ),
        (&["load", "127.0.0.1:9", "--edns", "1232"], "--dns-queries"),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--payload",
                "00ff",
                "--match",
                "flow",
                "--gso",
                "4",
            ],
            "--gso",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--payload",
                "00ff",
                "--match",
                "flow",
                "-s",
                "100",
            ],
            "--size does not go with a payload",
        ),
        (&["load", "127.0.0.1:9", "--max-loss", "120"], "0..100"),
        (
            &["load", "127.0.0.1:9", "--payload", "", "--match", "flow"],
            "is 0 bytes",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--payload-file",
                zero,
                "--payload-format",
                "raw",
                "--match",
                "flow",
            ],
            "is 0 bytes",
        ),
        (
            &["load", "127.0.0.1:9", "--rate-steps", "5k:1k:1k"],
            "END is below START",
        ),
        (
            &["load", "127.0.0.1:9", "--rate-steps", "1:1000:1"],
            "at most 100",
        ),
        (
            &["load", "127.0.0.1:9", "--max-p99", "soon"],
            "not a duration",
        ),
    ];
    for (args, want) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A plain Python sink: counts datagrams (and keeps each payload's first
/// bytes and arrival time) until 1.5 s of silence, then prints them.
const PY_SINK: &str = r#"
import socket, time, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(1.5)
got = []
while True:
    try:
        d, a = s.recvfrom(65535)
    except socket.timeout:
        if got: break
        continue
    got.append((time.monotonic(), d[:16].hex()))
print(json.dumps({"count": len(got), "t": [g[0] for g in got], "p": [g[1] for g in got]}), flush=True)
"#;

/// Starts the Python sink; returns it and its port.
fn py_sink() -> Option<(Child, BufReader<std::process::ChildStdout>, u16)> {
    if !have("python3") {
        return None;
    }
    let mut child = Command::new("python3")
        .args(["-c", PY_SINK])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let port = util::listening_port(&mut out);
    Some((child, out, port))
}

fn py_sink_result(
    mut child: Child,
    mut out: BufReader<std::process::ChildStdout>,
) -> serde_json::Value {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let _ = child.wait();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn one_way_into_a_python_sink_arrives_as_sent() {
    let Some((child, out, port)) = py_sink() else {
        return;
    };
    let (code, o, err) = run(&[
        "load",
        &format!("127.0.0.1:{port}"),
        "--match",
        "none",
        "--rate",
        "2000",
        "-t",
        "0.5",
        "--json",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&o);
    let got = py_sink_result(child, out);
    assert_eq!(got["count"].as_u64(), v["sent"].as_u64(), "{got} vs {v}");
    assert_eq!(v["sent"], 1000);
}

/// A capture (written with Python's struct, no packages): five UDP
/// requests 100 ms apart to port 5300, a TCP packet between them, and one
/// datagram to another port.
const MAKE_PCAP: &str = r#"
import struct, sys
def frame(dport, payload, proto=17):
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, proto, 0,
                     bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    return b"\x00" * 12 + b"\x08\x00" + ip + udp
only_tcp = sys.argv[2] == "tcp"
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    if only_tcp:
        pkts = [(0, frame(5300, b"x", proto=6))]
    else:
        pkts = [(i * 100_000, frame(5300, b"req-%d" % i)) for i in range(5)]
        pkts.insert(2, (150_000, frame(5300, b"tcp", proto=6)))
        pkts.append((450_000, frame(5301, b"other-port")))
    for usec, fr in pkts:
        f.write(struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(fr), len(fr)))
        f.write(fr)
"#;

#[test]
fn a_capture_is_replayed_in_order_with_and_without_its_timing() {
    if !have("python3") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("udpring-pcap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (pcap, tcp) = (dir.join("reqs.pcap"), dir.join("tcp.pcap"));
    for (f, kind) in [(&pcap, "udp"), (&tcp, "tcp")] {
        let st = Command::new("python3")
            .args(["-c", MAKE_PCAP, f.to_str().unwrap(), kind])
            .status()
            .unwrap();
        assert!(st.success());
    }
    let pcap_s = pcap.to_str().unwrap().to_string();
    let mut spans = Vec::new();
    for timing in [
        &[][..],
        &["--pcap-timing"][..],
        &["--pcap-timing", "--speed", "4"][..],
    ] {
        let Some((child, out, port)) = py_sink() else {
            return;
        };
        let target = format!("127.0.0.1:{port}");
        let mut args = vec![
            "load",
            &target,
            "--pcap",
            &pcap_s,
            "--pcap-port",
            "5300",
            "--match",
            "none",
            "-n",
            "5",
            "--json",
            "-q",
        ];
        args.extend_from_slice(timing);
        let (code, o, err) = run(&args);
        assert_eq!(code, 0, "{timing:?}: {err}");
        let v = json(&o);
        let got = py_sink_result(child, out);
        // In the capture's order; the TCP packet and the other port left out.
        let want: Vec<String> = (0..5)
            .map(|i| {
                format!("req-{i}")
                    .bytes()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect();
        assert_eq!(got["p"], serde_json::json!(want), "{timing:?}");
        let t: Vec<f64> = got["t"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        if timing.len() == 1 {
            // The capture's 100 ms gaps. One late datagram makes the next
            // gap short (lateness is the host's), so: the median gap, and
            // the whole span of 4 gaps.
            let mut gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
            let span = t[t.len() - 1] - t[0];
            gaps.sort_by(f64::total_cmp);
            assert!(
                gaps[gaps.len() / 2] > 0.09 && span > 0.39,
                "{gaps:?} {span}"
            );
        }
        spans.push(v["duration_s"].as_f64().unwrap());
    }
    // As fast as possible, at the capture's pace, and 4 times faster.
    assert!(
        spans[0] < 0.1 && spans[1] >= 0.4 && spans[2] < spans[1] / 2.0,
        "{spans:?}"
    );
    let (code, _, err) = run(&[
        "load",
        "127.0.0.1:9",
        "--pcap",
        tcp.to_str().unwrap(),
        "--match",
        "none",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no UDP datagram") && err.lines().count() == 1,
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn rate_steps_find_the_knee_of_a_rate_limited_echo() {
    // An echo that answers each source at most 2000/s (a burst of 400
    // absorbs a generator's stall of up to 0.2 s at the 2000/s step; at
    // 3000/s the loss is 20% or more).
    let mut echo = udpring()
        .args(util::words("echo --bind 127.0.0.1:0 -w 1 -q --duration 30"))
        .args(["--per-source-rate", "2000:400"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = util::banner_then_drain(echo.stdout.take().unwrap());
    let _e = Peer(echo, None);
    let (code, out, err) = run(&util::words(&format!(
        "load {} --rate-steps 1000:4000:1000 --step-duration 0.5 --max-loss 3 --json -q",
        addr
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["knee_rate"].as_f64(), Some(2000.0), "{v}");
    let rates: Vec<f64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rate"].as_f64().unwrap())
        .collect();
    assert_eq!(rates, [1000.0, 2000.0, 3000.0, 4000.0]);
    // Above the limit it loses; a threshold nothing meets exits 1.
    assert!(v["results"][3]["lost"].as_u64().unwrap() > 0, "{v}");
    let (code, _, err) = run(&util::words(&format!(
        "load {} --rate-steps 3000:4000:1000 --step-duration 0.3 --max-loss 5 -q",
        addr
    )));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no step stayed within loss <= 5%"), "{err}");
}

/// A responder's body that answers only requests with an even ID (offset
/// 0, 2 bytes).
const HALF: &str = r#"
    if int.from_bytes(q[0:2], "big") % 2 == 0:
        s.sendto(q, a)
"#;

/// 100 requests with a 2-byte ID at 1000/s to `target` (a [`HALF`]
/// responder), 50 ms timeout, JSON.
fn half_answered(target: &str) -> Vec<&str> {
    [
        "load",
        target,
        "--payload",
        "00000000",
        "--match",
        "id:0:2",
        "-n",
        "100",
        "--rate",
        "1000",
        "--warmup",
        "0",
        "--timeout",
        "0.05",
        "--json",
    ]
    .to_vec()
}

/// A paced run against a server that answers every other request (odd
/// one-byte IDs never): 256 IDs cannot cover a second of timeouts at
/// 2000/s, so each unanswered request is written off when its ID is next
/// needed, counted and said, and the schedule never waits. The latency
/// stays the service's (the run stalled for the timeout, and every
/// percentile read it, when the flow waited for the ID).
#[test]
fn a_paced_run_keeps_its_schedule_when_half_is_lost() {
    if !have("python3") {
        return;
    }
    let py = util::PyResponder::start(
        r#"
    if q[0] % 2 == 0:
        s.sendto(q, a)
"#,
    );
    let (code, out, err) = run(&util::words(&format!(
        "load {} --payload 00000000 --match id:0:1 --rate 2000 -t 1.5 --timeout 1 \
         --warmup 0 --drain 0.2 --json -q",
        py.addr
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let sent = v["sent"].as_u64().unwrap();
    assert!(sent >= 2900, "the schedule was kept: {v}");
    assert_eq!(v["saturated"], false, "{v}");
    let received = v["received"].as_u64().unwrap();
    assert!(
        received.abs_diff(sent / 2) <= sent / 20,
        "half answered: {v}"
    );
    let p50 = v["rtt_us"]["p50"].as_f64().unwrap();
    assert!(
        p50 < 20_000.0,
        "p50 {p50} us: the service's time, not a stall"
    );
    let early = v["ids_reused_early"].as_u64().unwrap();
    assert!(early > 500, "{v}");
    assert!(v["timeouts"].as_u64().unwrap() >= early, "{v}");
    assert!(
        v["warnings"]
            .to_string()
            .contains("written off before --timeout"),
        "{v}"
    );
}

#[test]
fn timeouts_can_be_kept_in_the_latency_picture() {
    if !have("python3") {
        return;
    }
    let py = util::PyResponder::start(HALF);
    let target = py.addr.to_string();
    let mut base = half_answered(&target);
    base.push("-q");
    let (code, out, err) = run(&base);
    assert_eq!(code, 0, "{err}");
    let plain = json(&out);
    assert_eq!(
        (plain["received"].as_u64(), plain["lost"].as_u64()),
        (Some(50), Some(50))
    );
    let mut args = base.to_vec();
    args.push("--timeouts-as-latency");
    let (code, out, err) = run(&args);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["timeouts_as_latency"], true);
    // Half the requests are in the histogram at the 50 ms timeout: the
    // p90 is there, and the count is every request.
    let p90 = v["rtt_us"]["p90"].as_f64().unwrap();
    assert!((49_900.0..=50_100.0).contains(&p90), "{v}");
    let total: u64 = v["histogram"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_u64().unwrap())
        .sum();
    assert_eq!(total, 100);
}

#[test]
fn quiet_means_errors_only_and_the_json_keeps_the_warnings() {
    if !have("python3") {
        return;
    }
    // Half the requests answered: a run that lost datagrams gets a hint.
    let py = util::PyResponder::start(HALF);
    let target = py.addr.to_string();
    let base = half_answered(&target);
    let mut quiet = base.to_vec();
    quiet.push("-q");
    let (code, out, err) = run(&quiet);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err, "", "-q: nothing on standard error but errors");
    let v = json(&out);
    let w: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        w.len() == 1 && w[0].starts_with("hint: 50.000% lost"),
        "{w:?}"
    );
    assert!(
        v["start_unix_s"].as_f64().unwrap() > 1.7e9,
        "always placed in time"
    );
    // Without -q the same hint is on standard error too.
    let (code, _, err) = run(&base);
    assert_eq!(code, 0);
    assert!(err.contains("udpring: hint: 50.000% lost"), "{err}");
    // An error still gets through -q.
    let (code, _, err) = run(&["load", "127.0.0.1:0", "--json", "-q"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("udpring: error: "), "{err}");
}

/// Notes the kernel's receive time of each datagram (a thread's wake-up
/// would blur the gaps).
struct Stamps(std::sync::Arc<std::sync::Mutex<Vec<std::time::SystemTime>>>);

impl udpring::Handler for Stamps {
    fn on_datagram(&mut self, d: udpring::Datagram<'_>, _tx: &mut udpring::Transport<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(d.rx_timestamp().expect("rx timestamps are on"));
    }
}

/// The gaps (µs) between the arrivals of `load --match none --rate 200
/// -t 3 --arrivals HOW` at an engine on loopback (gaps of 5 ms: on a busy
/// host the sender's wake-ups come a few ms late, which made gaps of 1 ms
/// in an evenly spaced run 12% long, as many as Poisson's).
fn arrival_gaps(how: &str) -> Vec<f64> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut cfg = util::config(udpring::Backend::Mmsg, false);
    cfg.rx_timestamps = true;
    let s2 = seen.clone();
    let sink = udpring::Engine::start(cfg, move |_| Stamps(s2.clone())).unwrap();
    let to = sink.local_addr().to_string();
    let args = format!("load {to} --match none --rate 200 -t 3 --arrivals {how} --json");
    let v = util::run_json(&util::words(&args));
    util::stop_clean(sink);
    assert_eq!(v["arrivals"], how, "{v}");
    let sent = v["sent"].as_u64().unwrap();
    // Each 1,024 sends span 1,024/rate: the first is cut at 3 s, which
    // holds 600 of them evenly, a binomial count around 600 (sd 16) for
    // Poisson.
    assert!(sent.abs_diff(600) < 100, "{v}");
    let t = seen.lock().unwrap().clone();
    assert_eq!(t.len() as u64, sent, "all of it arrived on loopback");
    t.windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap_or_default().as_secs_f64() * 1e6)
        .collect()
}

/// Poisson arrivals come as independent clients' do, at the same mean
/// rate: an exponential's tenth of the gaps is over ln 10 times the mean;
/// evenly spaced sends have almost none that long (a late wake-up of the
/// sender makes a few).
#[test]
fn poisson_arrivals_are_spread_as_an_exponential_and_keep_the_rate() {
    let long_share = |g: &[f64]| {
        let mean = g.iter().sum::<f64>() / g.len() as f64;
        g.iter().filter(|&&x| x > mean * 10f64.ln()).count() as f64 / g.len() as f64
    };
    let poisson = long_share(&arrival_gaps("poisson"));
    let even = long_share(&arrival_gaps("even"));
    assert!(
        poisson > 0.06 && even < poisson / 2.0,
        "share of gaps over 2.3 means: poisson {poisson}, even {even}"
    );
}
