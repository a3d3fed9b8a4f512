//! Issue 10: load real services, not only echo servers. NSD answers a
//! dnsperf query file (response codes and TC counted), memcached's UDP
//! frame is matched by its request ID, a responder that duplicates and
//! invents IDs is accounted for exactly, and CI thresholds exit 1. All on
//! loopback; NSD and memcached are peers (`.ci/run` installs them).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{have, vocab};

fn udpring() -> Command {
    Command::new(env!("CARGO_BIN_EXE_udpring"))
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = udpring().args(args).output().expect("run udpring");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(out: &str) -> serde_json::Value {
    let v = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    vocab::check_any(&v);
    v
}

/// A child killed and reaped on drop, with a directory removed.
struct Peer(Child, Option<std::path::PathBuf>);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        if let Some(d) = &self.1 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// A free UDP port on loopback (bound, then released).
fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something answers a DNS query at `port`.
fn wait_dns(port: u16) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let q = udpring::apps::load::dns::query("ns.example.com", "A", None).unwrap();
    for _ in 0..50 {
        let _ = s.send_to(&q, ("127.0.0.1", port));
        if s.recv(&mut [0u8; 512]).is_ok() {
            return;
        }
    }
    panic!("nothing answers DNS on port {port}");
}

const ZONE: &str = "$ORIGIN example.com.\n$TTL 300\n\
@ IN SOA ns.example.com. admin.example.com. 1 3600 600 86400 300\n\
@ IN NS ns.example.com.\nns IN A 127.0.0.1\nwww IN A 192.0.2.1\n";

fn nsd() -> Option<(Peer, u16)> {
    if !have("nsd") {
        return None;
    }
    let dir = std::env::temp_dir().join(format!("udpring-nsd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A TXT record over 512 bytes: without EDNS its answer is truncated.
    let big = format!(
        "big IN TXT {}\n",
        vec![format!("\"{}\"", "a".repeat(250)); 3].join(" ")
    );
    std::fs::write(dir.join("example.com.zone"), format!("{ZONE}{big}")).unwrap();
    let port = free_port();
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  do-ip6: no\n  username: \"\"\n  \
         chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  \
         xfrdfile: \"{d}/xfrd.state\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         logfile: \"{d}/nsd.log\"\n  server-count: 1\n  \
         rrl-ratelimit: 0\n\
         remote-control:\n  control-enable: no\n\
         zone:\n  name: example.com\n  zonefile: example.com.zone\n"
    );
    std::fs::write(dir.join("nsd.conf"), conf).unwrap();
    let child = Command::new("nsd")
        .args(["-d", "-c"])
        .arg(dir.join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peer = Peer(child, Some(dir));
    wait_dns(port);
    Some((peer, port))
}

#[test]
fn a_dnsperf_query_file_against_nsd_counts_every_response_code() {
    let Some((nsd, port)) = nsd() else { return };
    let qfile = nsd.1.as_ref().unwrap().join("queries.txt");
    std::fs::write(
        &qfile,
        "# dnsperf's format\nwww.example.com A\nnope.example.com A\n\
         big.example.com TXT\nwww.other.org A\n",
    )
    .unwrap();
    let target = format!("127.0.0.1:{port}");
    let q = qfile.to_str().unwrap();
    let (code, out, err) = run(&[
        "load",
        &target,
        "--dns-queries",
        q,
        "-n",
        "400",
        "--rate",
        "2000",
        "--json",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["match"], "id:0:2", "--dns-queries implies the DNS ID");
    assert_eq!(
        (v["sent"].as_u64(), v["lost"].as_u64()),
        (Some(400), Some(0)),
        "{v}"
    );
    let c = &v["counts"];
    // Each line is sent 100 times: www and big exist (NOERROR), nope does
    // not (NXDOMAIN), other.org is not NSD's zone (REFUSED); big's answer
    // does not fit 512 bytes (TC).
    assert_eq!(
        c["dns_rcodes"],
        serde_json::json!({"NOERROR": 200, "NXDOMAIN": 100, "REFUSED": 100}),
        "{v}"
    );
    assert_eq!(c["dns_truncated"], 100, "{v}");
    assert_eq!(c["unmatched"], 0, "{v}");
    // With EDNS0 advertising 4096 bytes the big answer fits.
    let (code, out, err) = run(&[
        "load",
        &target,
        "--dns-queries",
        q,
        "--edns",
        "4096",
        "-n",
        "400",
        "--rate",
        "2000",
        "--json",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["counts"]["dns_truncated"], 0, "{v}");
    assert_eq!(v["counts"]["dns_rcodes"]["NOERROR"], 200, "{v}");
}

#[test]
fn memcached_udp_frames_are_matched_by_request_id_and_by_flow() {
    if !have("memcached") {
        return;
    }
    let port = free_port();
    let child = Command::new("memcached")
        .args([
            "-U",
            &port.to_string(),
            "-p",
            "0",
            "-l",
            "127.0.0.1",
            "-u",
            "root",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _mc = Peer(child, None);
    // The UDP frame: request ID (udpring's), sequence 0, 1 datagram, 0;
    // then the text command.
    let payload = format!(
        "0000000000010000{}",
        b"get foo\r\n"
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let target = format!("127.0.0.1:{port}");
    // Until memcached listens.
    let mut up = false;
    for _ in 0..50 {
        let (code, _, _) = run(&[
            "load",
            &target,
            "--payload",
            &payload,
            "--match",
            "flow",
            "-n",
            "1",
            "--timeout",
            "0.1",
            "-q",
        ]);
        if code == 0 {
            up = true;
            break;
        }
    }
    assert!(up, "memcached did not answer");
    for how in ["id:0:2", "flow"] {
        let (code, out, err) = run(&[
            "load",
            &target,
            "--payload",
            &payload,
            "--match",
            how,
            "-n",
            "500",
            "--flows",
            "2",
            "--json",
            "-q",
        ]);
        assert_eq!(code, 0, "{how}: {err}");
        let v = json(&out);
        assert_eq!(
            (
                v["sent"].as_u64(),
                v["received"].as_u64(),
                v["counts"]["unmatched"].as_u64()
            ),
            (Some(500), Some(500), Some(0)),
            "{how}: {v}"
        );
        assert!(v["rtt_us"]["p50"].as_f64().unwrap() > 0.0);
    }
}

/// A responder (Python) that answers each request twice, and once more
/// with an ID no request carries.
const QUIRKY: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
s.settimeout(10)
while True:
    try:
        q, a = s.recvfrom(2048)
    except socket.timeout:
        break
    s.sendto(q, a)
    s.sendto(q, a)
    i = (int.from_bytes(q[2:4], "big") + 30000) & 0xffff
    s.sendto(q[:2] + i.to_bytes(2, "big") + q[4:], a)
"#;

#[test]
fn duplicates_and_invented_ids_are_counted_not_credited() {
    if !have("python3") {
        return;
    }
    let mut child = Command::new("python3")
        .args(["-c", QUIRKY])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _py = Peer(child, None);
    let target = format!("127.0.0.1:{}", line.trim());
    // The ID sits at offset 2 of an 8-byte payload. No warm-up: what
    // arrives during one is the warm-up's, whatever it is.
    let (code, out, err) = run(&[
        "load",
        &target,
        "--payload",
        "a5a5000000000000",
        "--match",
        "id:2:2",
        "--mode",
        "ping",
        "-n",
        "100",
        "--warmup",
        "0",
        "--drain",
        "0.3",
        "--json",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        (
            v["sent"].as_u64(),
            v["received"].as_u64(),
            v["duplicated"].as_u64(),
            v["counts"]["unmatched"].as_u64()
        ),
        (Some(100), Some(100), Some(100), Some(100)),
        "{v}"
    );
    // Thresholds: met, exit 0; missed, exit 1 with the line.
    let (code, _, err) = run(&[
        "load",
        &target,
        "--payload",
        "a5a5000000000000",
        "--match",
        "id:2:2",
        "-n",
        "200",
        "--max-loss",
        "50",
        "-q",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&[
        "load",
        &target,
        "--payload",
        "a5a5000000000000",
        "--match",
        "id:2:2",
        "-n",
        "200",
        "--max-p99",
        "1ns",
        "-q",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("threshold: p99") && err.contains("--max-p99"),
        "{err}"
    );
}

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
