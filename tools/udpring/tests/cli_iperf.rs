//! What iperf3 users reach for, and options that are either
//! honoured or refused. One-way load into `udpring sink` (loss,
//! reordering, duplicates and jitter per sender), rates and bitrates with
//! units, bursts, size lists; per-subcommand `mcast` help; one-line errors
//! with the true ranges and hints. All on loopback.

mod util;

use util::{Server, json, run};

use std::io::BufReader;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use udpring_cli::apps::header::{HEADER_LEN, Header};

/// A `udpring sink --json` on loopback for `secs`; its document at the
/// end (`.json()`).
fn sink(secs: &str) -> Server {
    Server::start(&util::words(&format!(
        "sink --bind 127.0.0.1:0 -q --json --duration {secs}"
    )))
}

/// A datagram with udpring's header: `seq`, stamped `sent_ns`.
fn stamped(token: u64, seq: u64, sent_ns: u64) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_LEN + 8];
    Header::new_unchecked(&mut b[..]).fill(token, 0, seq, sent_ns);
    b
}

#[test]
fn the_sink_reports_gaps_reordering_duplicates_and_jitter_per_sender() {
    let sink = sink("3");
    // Sender A: sequences 0 1 2 4 6 5 5 (3 never sent, 5 late, then again)
    // stamped 1 ms apart and sent 1 ms apart: little jitter.
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in [0u64, 1, 2, 4, 6, 5, 5] {
        a.send_to(&stamped(7, seq, seq * 1_000_000), sink.addr)
            .unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    // Sender B: 40 datagrams all stamped 0 but sent 2 ms apart: each
    // transit is 2 ms longer than the last, so |D| >= 2 ms every time and
    // RFC 3550's estimate climbs towards it (after 40, >= 90% of the way).
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..40u64 {
        b.send_to(&stamped(8, seq, 0), sink.addr).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    // Not ours: counted as invalid.
    b.send_to(b"hello", sink.addr).unwrap();
    let v = sink.json();
    let src = |s: &UdpSocket| {
        let addr = s.local_addr().unwrap().to_string();
        v["sources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["addr"] == addr.as_str())
            .unwrap_or_else(|| panic!("{addr} missing: {v}"))
            .clone()
    };
    let sa = src(&a);
    assert_eq!(
        util::counts(&sa, ["received", "lost", "reordered", "duplicated"]),
        [Some(6), Some(1), Some(1), Some(1)],
        "{sa}"
    );
    let sb = src(&b);
    assert_eq!(sb["received"], 40, "{sb}");
    let (ja, jb) = (
        sa["jitter_us"].as_f64().unwrap(),
        sb["jitter_us"].as_f64().unwrap(),
    );
    assert!(jb > 1500.0, "B's transit grows 2 ms a datagram: {jb} us");
    assert!(ja < jb, "A is paced as stamped: {ja} us vs B's {jb} us");
    assert_eq!(v["invalid"], 1, "{v}");
}

#[test]
fn one_way_load_into_the_sink_counts_the_same_datagrams() {
    let sink = sink("4");
    let target = sink.addr.to_string();
    // Paced with units, two flows: the sink sees two senders whose counts
    // add up to what load sent (no warm-up with --match none).
    let (code, out, err) = run(&[
        "load", &target, "--match", "none", "--rate", "2k", "-t", "0.5", "--flows", "2", "--json",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let l = json(&out);
    assert_eq!(
        (l["one_way"].as_bool(), l["lost"].as_u64()),
        (Some(true), Some(0))
    );
    assert!(l["rtt_us"].is_null());
    let sent = l["sent"].as_u64().unwrap();
    assert_eq!(sent, 1000, "2k/s for 0.5 s: {l}");
    // A bitrate: 800 kbit/s of 100-byte payloads is 1000 datagrams/s.
    let (code, out, err) = run(&util::words(&format!(
        "load {} --match none --bitrate 800k -s 100 -t 0.5 --json -q",
        target
    )));
    assert_eq!(code, 0, "{err}");
    let r = json(&out);
    assert_eq!(r["rate"].as_f64(), Some(1000.0), "{r}");
    assert_eq!(r["sent"], 500, "{r}");
    // Bursts: 50 back to back every 100 ms for 0.5 s: 5 bursts.
    let (code, out, err) = run(&util::words(&format!(
        "load {} --match none --burst 50 --burst-interval 0.1 -t 0.5 --json -q",
        target
    )));
    assert_eq!(code, 0, "{err}");
    let b = json(&out);
    assert_eq!(b["sent"], 250, "{b}");
    assert_eq!(b["burst"]["datagrams"], 50, "{b}");
    let v = sink.json();
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 4, "2 flows, then one, then one: {v}");
    let total: u64 = sources
        .iter()
        .map(|s| s["received"].as_u64().unwrap())
        .sum();
    assert_eq!(total, sent + 500 + 250, "{v}");
    for s in sources {
        assert_eq!(s["lost"], 0, "{s}");
    }
    // Into a sink without --match none: exit 1 and the hint.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, _, err) = run(&[
        "load",
        &closed.local_addr().unwrap().to_string(),
        "-t",
        "0.2",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("--match none"), "{err}");
}

#[test]
fn a_size_list_runs_one_measurement_per_size() {
    let sink = sink("3");
    let (code, out, err) = run(&util::words(&format!(
        "load {} --match none --size 64,512,1400 -n 100 --json -q",
        sink.addr
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    let sizes: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, [64, 512, 1400], "{v}");
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["sent"], 100, "{r}");
    }
    let (code, _, err) = run(&util::words(
        "load 127.0.0.1:9 --size 64,512 --hist-out /tmp/x.hgrm",
    ));
    assert_eq!(code, 2, "{err}");
}

#[test]
fn options_are_honoured_where_accepted_or_refused_in_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["load", "127.0.0.1:9", "--ttl", "4"],
            "--ttl is for a multicast target",
        ),
        (
            &["load", "127.0.0.1:9", "--max-responders", "8"],
            "--max-responders is for a multicast target",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--bind",
                "127.0.0.1:65535",
                "--flows",
                "2",
            ],
            "past 65535",
        ),
        (&["load", "127.0.0.1:9", "--rate", "5x"], "e.g. 20000, 20k"),
        (
            &["load", "127.0.0.1:9", "--rate", "1k", "--bitrate", "1M"],
            "cannot be used",
        ),
        (
            &["load", "127.0.0.1:9", "--burst", "10"],
            "--burst-interval",
        ),
        (
            &["load", "127.0.0.1:9", "--mode", "ping", "--bitrate", "1M"],
            "open loop",
        ),
        (
            &["load", "127.0.0.1:9", "--match", "none", "--window", "8"],
            "no reply comes back",
        ),
        (&["bench", "--window", "0"], "1..=1000000"),
        (&["bench", "--size", "70000"], "must be 32..65507"),
        (&["bench", "--size", "8"], "must be 32..65507"),
        (&["bench", "--gso-segments", "100"], "1..=64"),
        (
            &["mcast", "send", "239.1.1.1:5000", "--verify"],
            "udpring mcast send --help",
        ),
        (
            &["mcast", "send", "239.1.1.1:5000", "--source", "10.0.0.1"],
            "--source",
        ),
        (
            &["mcast", "listen", "239.1.1.1:5000", "--rate", "5"],
            "--rate",
        ),
        (&["mcast", "listen", "239.1.1.1:5000", "-c", "5"], "-c"),
        (&["mcast", "pong", "239.1.1.1:5000", "--ttl", "5"], "--ttl"),
    ];
    for (args, want) in cases {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    // Each mcast subcommand shows its own options only.
    for (sub, has, lacks) in [
        (
            "listen",
            &["--verify", "--source"][..],
            &["--rate", "--ttl", "--count", "--allow"][..],
        ),
        (
            "send",
            &["--rate", "--ttl", "--count"][..],
            &["--verify", "--source", "--allow"][..],
        ),
        (
            "pong",
            &["--source", "--allow"][..],
            &["--rate", "--verify", "--count"][..],
        ),
        (
            "ping",
            &["--rate", "--count"][..],
            &["--verify", "--source", "--allow"][..],
        ),
    ] {
        let (code, help, _) = run(&["mcast", sub, "--help"]);
        assert_eq!(code, 0);
        for h in has {
            assert!(help.contains(h), "mcast {sub} --help lacks {h}");
        }
        for l in lacks {
            assert!(!help.contains(l), "mcast {sub} --help shows {l}");
        }
    }
}

/// A paced run asked for far more than the host can send ends a second
/// past its end, not when its whole schedule has gone (0.3 s at 50M/s
/// took ~40 s here): what was due and never sent is counted, and the
/// schedule's datagrams are all either sent or unsent.
#[test]
fn a_paced_run_the_host_cannot_keep_stops_a_second_past_its_end() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sink.local_addr().unwrap().to_string();
    let start = std::time::Instant::now();
    let (code, out, err) = run(&[
        "load",
        &target,
        "--match",
        "none",
        "--rate",
        "50M",
        "-t",
        "0.3",
        "--workers",
        "1",
        "--json",
        "-q",
    ]);
    let took = start.elapsed();
    assert_eq!(code, 0, "{err}");
    assert!(
        took < Duration::from_secs(5),
        "a 0.3 s run took {took:?}: it sent its whole schedule however late"
    );
    let v = json(&out);
    let (sent, unsent) = (v["sent"].as_u64().unwrap(), v["unsent"].as_u64().unwrap());
    assert!(unsent > 0, "{v}");
    // 50M/s for 0.3 s on one worker: 15,000,000 due in the measured span.
    assert!(
        (sent + unsent).abs_diff(15_000_000) <= 1,
        "sent {sent} + unsent {unsent}"
    );
    assert_eq!(v["saturated"], true, "{v}");
    assert!(
        v["warnings"].to_string().contains("never sent"),
        "{}",
        v["warnings"]
    );
}

/// A generator that could not keep its schedule makes a
/// merge not valid (exit 1, the reason said), instead of being averaged
/// away; --shard and --start-at refuse what they cannot mean.
#[test]
fn a_saturated_generator_makes_the_merged_run_not_valid() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sink.local_addr().unwrap().to_string();
    let dir = std::env::temp_dir().join(format!("udpring-sat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    // One paced at a rate it keeps, one at 20M/s on one worker for 10 ms
    // (no host here sends that: it falls behind and says so).
    for (name, rate) in [("ok.json", "1000"), ("behind.json", "20M")] {
        let (code, out, err) = run(&[
            "load", &target, "--match", "none", "--rate", rate, "-t", "0.01", "--json", "-q",
        ]);
        assert_eq!(code, 0, "{err}");
        let v = json(&out);
        assert_eq!(v["saturated"], rate == "20M", "{v}");
        // -q keeps the warning out of standard error and in the result.
        assert!(err.is_empty(), "{err}");
        let said = v["warnings"].to_string().contains("asked for 20000000/s");
        assert_eq!(said, rate == "20M", "{v}");
        let f = dir.join(name);
        std::fs::write(&f, out).unwrap();
        files.push(f.display().to_string());
    }
    let (code, out, err) = run(&["report", &files[0], &files[1], "--allow-mixed"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        out.starts_with("NOT VALID: a generator could not keep its schedule"),
        "{out}"
    );
    assert!(err.contains("not valid"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    for (args, want) in [
        (
            &["load", "127.0.0.1:9", "--shard", "3/3"][..],
            "I must be 0..N-1",
        ),
        (
            &["load", "127.0.0.1:9", "--start-at", "tomorrow"][..],
            "RFC 3339",
        ),
        (
            &["load", "127.0.0.1:9", "-n", "2", "--shard", "2/3"][..],
            "leaves none",
        ),
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(want) && err.lines().count() == 1,
            "{args:?}: {err}"
        );
    }
}

/// A fixed --bind port with several flows is a range of source ports
/// (flow k from port P + k), and --shard gives each generator its own
/// slice of it. The sink sees the senders' ports.
#[test]
fn a_bind_port_with_several_flows_is_a_range_and_shards_take_slices() {
    let sink = sink("3");
    let target = sink.addr.to_string();
    // A base port free for 4 in a row: try a few.
    let base = (0..50)
        .map(|k| 40_000 + k * 97)
        .find(|&p| (0..4).all(|i| UdpSocket::bind(("127.0.0.1", p + i)).is_ok()))
        .expect("four free ports");
    for shard in ["0/2", "1/2"] {
        let (code, _, err) = run(&[
            "load",
            &target,
            "--match",
            "none",
            "--bind",
            &format!("127.0.0.1:{base}"),
            "--flows",
            "2",
            "-n",
            "10",
            "--shard",
            shard,
            "-q",
        ]);
        assert_eq!(code, 0, "{shard}: {err}");
    }
    let v = sink.json();
    let mut ports: Vec<u64> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["addr"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    ports.sort_unstable();
    let b = u64::from(base);
    assert_eq!(ports, [b, b + 1, b + 2, b + 3], "{v}");
}

/// A generator whose --start-at passed a few seconds ago starts at once,
/// says how late it is, and its result carries it; one more than a minute
/// late (or a time in 1970) is a usage error.
#[test]
fn a_late_start_is_said_and_marked() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let target = sink.local_addr().unwrap().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (code, out, err) = run(&util::words(&format!(
        "load {target} --match none -n 5 --start-at {:.3} --json -q",
        now - 5.0
    )));
    assert_eq!(code, 0, "{err}");
    assert!(err.is_empty(), "-q says only errors: {err}");
    let v = json(&out);
    assert!(
        v["warnings"].to_string().contains("ms after --start-at"),
        "{v}"
    );
    let late = v["start_late_s"].as_f64().unwrap();
    assert!((4.0..30.0).contains(&late), "{v}");
    for past in ["2026-01-01T00:00:00Z", "0"] {
        let (code, _, err) = run(&util::words(&format!(
            "load {target} --match none -n 5 --start-at {past}"
        )));
        assert_eq!(code, 2, "{past}: {err}");
        assert!(err.contains("more than a minute"), "{past}: {err}");
    }
}

/// IPv6-only against dual-stack, explicit either way.
#[test]
fn v6only_and_dual_stack_are_explicit() {
    for (flag, v4_answered) in [("--dual-stack", true), ("--v6only", false)] {
        let echo = Server::start(&util::words(&format!(
            "echo --bind [::]:0 -w 1 -q --duration 5 {flag}"
        )));
        let addr = echo.addr;
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.send_to(b"v4?", ("127.0.0.1", addr.port())).unwrap();
        let got = s.recv(&mut [0u8; 16]).is_ok();
        drop(echo);
        assert_eq!(got, v4_answered, "{flag}");
    }
    let (code, _, err) = run(&["echo", "--v6only", "--dual-stack"]);
    assert_eq!(code, 2, "{err}");
}

/// A Python receiver that reads each datagram's TOS byte (IP_RECVTOS) or
/// traffic class (IPV6_RECVTCLASS) and prints the set of values seen.
const TOS_SINK: &str = r#"
import socket, sys
v6 = sys.argv[1] == "6"
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
if v6:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVTCLASS, 1)
else:
    s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
s.bind(("::1" if v6 else "127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(1.5)
seen = set()
while True:
    try:
        d, anc, _, _ = s.recvmsg(2048, 64)
    except socket.timeout:
        break
    for level, kind, data in anc:
        seen.add(data[0])
print(sorted(seen), flush=True)
"#;

/// --dscp and --ecn mark every datagram, as
/// a receiver that reads the marks sees them, IPv4 and IPv6.
#[test]
fn dscp_and_ecn_marks_are_seen_by_a_receiver() {
    if !util::have("python3") {
        return;
    }
    for (fam, host) in [("4", "127.0.0.1"), ("6", "[::1]")] {
        let mut py = Command::new("python3")
            .args(["-c", TOS_SINK, fam])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(py.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let target = format!("{host}:{}", line.trim());
        let (code, _, err) = run(&[
            "load", &target, "--match", "none", "-n", "20", "--dscp", "46", "--ecn", "ect0", "-q",
        ]);
        assert_eq!(code, 0, "{err}");
        let mut seen = String::new();
        std::io::BufRead::read_line(&mut out, &mut seen).unwrap();
        let _ = py.wait();
        // EF (46) << 2 | ECT(0) (2) = 186.
        assert_eq!(seen.trim(), "[186]", "IPv{fam}");
    }
    // udpring reads the marks back: the sink reports each sender's.
    let sink = sink("2");
    let (code, _, err) = run(&util::words(&format!(
        "load {} --match none -n 5 --dscp 34 -q",
        sink.addr
    )));
    assert_eq!(code, 0, "{err}");
    let v = sink.json();
    assert_eq!(v["sources"][0]["tos"], 34 << 2, "{v}");
    let (code, _, _) = run(&["load", "127.0.0.1:9", "--dscp", "64"]);
    assert_eq!(code, 2);
}

/// A client that sends with a mark, and prints the mark of each answer.
const TOS_CLIENT: &str = r#"
import socket, sys
v6, port = sys.argv[1] == "6", int(sys.argv[2])
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
lvl, opt, rcv = ((socket.IPPROTO_IPV6, socket.IPV6_TCLASS, socket.IPV6_RECVTCLASS) if v6
                 else (socket.IPPROTO_IP, socket.IP_TOS, socket.IP_RECVTOS))
s.setsockopt(lvl, rcv, 1)
s.settimeout(2)
out = []
for mark in (0xb8, 0x28, 0x01, 0xbb, 0x03):
    s.setsockopt(lvl, opt, mark)
    s.sendto(b"mark me", ("::1" if v6 else "127.0.0.1", port))
    d, anc, _, _ = s.recvmsg(2048, 64)
    out.append([data[0] for (_, _, data) in anc][:1])
print(out)
"#;

/// `echo --reflect-tos` answers each datagram with the mark it arrived
/// with, per reply, both backends, IPv4 and IPv6; CE (congestion met on
/// the way in) goes back as ECT(0), never as CE.
#[test]
fn echo_reflects_each_datagrams_mark() {
    if !util::have("python3") {
        return;
    }
    for backend in ["uring", "mmsg"] {
        for (fam, bind) in [("4", "127.0.0.1:0"), ("6", "[::1]:0")] {
            let mut echo = Command::new(env!("CARGO_BIN_EXE_udpring"))
                .args(["echo", "--bind", bind, "-w", "1", "-q", "--duration", "5"])
                .args(["--reflect-tos", "--backend", backend])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let addr = util::banner_then_drain(echo.stdout.take().unwrap());
            let out = Command::new("python3")
                .args(["-c", TOS_CLIENT, fam, &addr.port().to_string()])
                .output()
                .unwrap();
            let _ = echo.kill();
            let _ = echo.wait();
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "[[184], [40], [1], [186], [2]]",
                "{backend} IPv{fam}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
