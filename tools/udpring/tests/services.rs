//! Load real services, not only echo servers. NSD answers a
//! dnsperf query file (response codes and TC counted), memcached's UDP
//! frame is matched by its request ID, a responder that duplicates and
//! invents IDs is accounted for exactly, a rate-limiting DNS server is
//! named for what it does, and what is not DNS is not an answer. All on
//! loopback; NSD and memcached are peers (`.ci/run` installs them). How a
//! run behaves against scripted peers is in `load_runs.rs`.

mod util;

use util::{json, run};

use std::process::{Command, Stdio};
use std::time::Duration;

use util::{Peer, have};

/// Waits until something answers a DNS query at `port`.
fn wait_dns(port: u16) {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let q = udpring_cli::apps::load::dns::query("ns.example.com", "A", None).unwrap();
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
    let port = util::unused_port();
    let d = dir.display();
    let conf = format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  do-ip6: no\n  username: \"\"\n  \
         chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  pidfile: \"{d}/nsd.pid\"\n  \
         xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  \
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
    let (code, out, err) = run(&util::words(&format!(
        "load {} --dns-queries {} -n 400 --rate 2000 --json -q",
        target, q
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["match"], "id:0:2", "--dns-queries implies the DNS ID");
    assert_eq!(
        (v["sent"].as_u64(), v["lost"].as_u64()),
        (Some(400), Some(0)),
        "{v}"
    );
    let c = &v;
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
    let (code, out, err) = run(&util::words(&format!(
        "load {} --dns-queries {} --edns 4096 -n 400 --rate 2000 --json -q",
        target, q
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(v["dns_truncated"], 0, "{v}");
    assert_eq!(v["dns_rcodes"]["NOERROR"], 200, "{v}");
}

/// A memcached frame for `cmd` as `--payload` hex: the UDP frame header
/// (request ID, sequence 0, 1 datagram, 0), then the text command.
fn mc_frame(cmd: &[u8]) -> String {
    let hex = udpring_cli::apps::load::expect::hex(cmd);
    format!("0000000000010000{hex}")
}

/// A `--payload-file` of memcached frames, one per command: its folder
/// (removed on drop, a failed test's too) and its path.
fn mc_file(name: &str, cmds: &[&[u8]]) -> (util::Scratch, String) {
    let dir = util::Scratch::new(name);
    let file = dir.path("frames.hex");
    let lines: String = cmds.iter().map(|c| mc_frame(c) + "\n").collect();
    std::fs::write(&file, format!("# memcached UDP frames\n{lines}")).unwrap();
    (dir, file)
}

/// memcached listening on a UDP port of loopback, once it answers: the
/// peer and its address.
fn memcached() -> Option<(Peer, String)> {
    if !have("memcached") {
        return None;
    }
    let port = util::unused_port();
    let child = Command::new("memcached")
        .args(util::words(&format!(
            "-U {} -p 0 -l 127.0.0.1 -u root",
            port
        )))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peer = Peer(child, None);
    let target = format!("127.0.0.1:{port}");
    for _ in 0..50 {
        let (code, _, _) = run(&util::words(&format!(
            "load {} --payload {} --match flow -n 1 --timeout 0.1 -q",
            target,
            mc_frame(b"get foo\r\n")
        )));
        if code == 0 {
            return Some((peer, target));
        }
    }
    panic!("memcached did not answer");
}

#[test]
fn memcached_udp_frames_are_matched_by_request_id_and_by_flow() {
    let Some((_mc, target)) = memcached() else {
        return;
    };
    let payload = mc_frame(b"get foo\r\n");
    // Requests from a payload file: two gets, hex, with a comment. (One
    // key each: memcached answers a multi-key get in several datagrams,
    // and the ones after the first count as duplicated.) Paced, as a
    // flood overruns memcached's socket buffer.
    let (_dir, file) = mc_file("mc", &[b"get foo\r\n", b"get bar\r\n"]);
    // By ID, paced; by flow, one in flight per flow (a closed loop).
    for (how, src, what, pace) in [
        ("id:0:2", "--payload-file", &file, "5000"),
        ("flow", "--payload", &payload, ""),
    ] {
        let pace: &[&str] = if pace.is_empty() {
            &[]
        } else {
            &["--rate", pace]
        };
        let base = [
            "load", &target, src, what, "--match", how, "-n", "500", "--flows", "2", "--json", "-q",
        ];
        let (code, out, err) = run(&[&base[..], pace].concat());
        assert_eq!(code, 0, "{how}: {err}");
        let v = json(&out);
        assert_eq!(
            (
                v["sent"].as_u64(),
                v["received"].as_u64(),
                v["unmatched"].as_u64()
            ),
            (Some(500), Some(500), Some(0)),
            "{how}: {v}"
        );
        assert!(v["rtt_us"]["p50"].as_f64().unwrap() > 0.0);
    }
}

/// A memcached miss (`END`) answers as fast as a hit (`VALUE ...`): with
/// `--expect` the misses are counted apart, a run of nothing but misses
/// exits 1 and shows what came back instead, and a mixed run warns.
#[test]
fn memcached_misses_are_told_from_hits_by_expect() {
    let Some((_mc, target)) = memcached() else {
        return;
    };
    // "VALUE" after the 8-byte frame header.
    let value = "--expect 8:56414c5545";
    let (code, _, err) = run(&util::words(&format!(
        "load {target} --payload {} --match flow -n 100 {value} -q",
        mc_frame(b"get absent\r\n")
    )));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("none of the 100 answers") && err.contains("\"........END..\""),
        "{err}"
    );
    let (code, _, err) = run(&util::words(&format!(
        "load {target} --payload {} --match flow -n 1 --expect 8:53544f524544",
        mc_frame(b"set present 0 0 3\r\nabc\r\n")
    )));
    assert_eq!(code, 0, "STORED: {err}");
    // Every other request a hit, one flow: the file's payloads in turn.
    let (_dir, file) = mc_file("mc-expect", &[b"get present\r\n", b"get absent\r\n"]);
    let (code, out, err) = run(&util::words(&format!(
        "load {target} --payload-file {file} --match flow -n 200 {value} --json"
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        (v["received"].as_u64(), v["unexpected"].as_u64()),
        (Some(200), Some(100)),
        "{v}"
    );
    assert_eq!(v["expect"], serde_json::json!(["8:56414c5545"]), "{v}");
    let warned = "100 of 200 answers (50.00%) did not carry --expect 8:56414c5545";
    assert!(err.contains(warned), "{err}");
    assert!(v["warnings"].to_string().contains(warned), "{v}");
    // Over time: each interval's own (NDJSON), adding up to the run's.
    let (code, out, err) = run(&util::words(&format!(
        "load {target} --payload-file {file} --match flow -t 0.6 -i 0.1 {value} --json-stream -q"
    )));
    assert_eq!(code, 0, "{err}");
    let lines = util::json_lines(&out);
    let (intervals, end) = lines.split_at(lines.len() - 1);
    let each: Vec<u64> = intervals
        .iter()
        .map(|e| e["unexpected"].as_u64().unwrap())
        .collect();
    let (got, bad) = (
        end[0]["received"].as_u64().unwrap(),
        end[0]["unexpected"].as_u64(),
    );
    // (The last, the drain, may hold no answer.)
    assert!(each.iter().filter(|&&n| n > 0).count() >= 4, "{each:?}");
    assert_eq!(Some(each.iter().sum::<u64>()), bad, "{each:?}");
    assert!(bad.unwrap().abs_diff(got / 2) <= 1, "{bad:?} of {got}");
    // As a CI threshold.
    for (max, exit) in [(40, 1), (50, 0)] {
        let (code, _, err) = run(&util::words(&format!(
            "load {target} --payload-file {file} --match flow -n 20 {value} --max-unexpected {max} -q"
        )));
        assert_eq!(code, exit, "--max-unexpected {max}: {err}");
        if exit == 1 {
            let over = "unexpected answers 50.000% (10 of 20) are over --max-unexpected 40%";
            assert!(err.contains(over), "{err}");
        }
    }
}

/// A responder's body (Python) that answers each request twice, and once
/// more with an ID no request carries.
const QUIRKY: &str = r#"
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
    let py = util::PyResponder::start(QUIRKY);
    let target = py.addr.to_string();
    // The ID sits at offset 2 of an 8-byte payload. No warm-up: what
    // arrives during one is the warm-up's, whatever it is.
    let (code, out, err) = run(&util::words(&format!(
        "load {} --payload a5a5000000000000 --match id:2:2 --mode ping -n 100 --warmup 0 --drain 0.3 --json -q",
        target
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        (
            v["sent"].as_u64(),
            v["received"].as_u64(),
            v["duplicated"].as_u64(),
            v["unmatched"].as_u64()
        ),
        (Some(100), Some(100), Some(100), Some(100)),
        "{v}"
    );
    // Thresholds: met, exit 0; missed, exit 1 with the line.
    let (code, _, err) = run(&util::words(&format!(
        "load {} --payload a5a5000000000000 --match id:2:2 -n 200 --max-loss 50 -q",
        target
    )));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&util::words(&format!(
        "load {} --payload a5a5000000000000 --match id:2:2 -n 200 --max-p99 1ns -q",
        target
    )));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("threshold: p99") && err.contains("--max-p99"),
        "{err}"
    );
}

/// A DNS server that answers half its queries, each truncated (TC set,
/// as response-rate limiting's "slip" does): the hint names the policy,
/// not the server's capacity.
#[test]
fn a_rate_limiting_dns_server_is_named_in_the_hint() {
    if !have("python3") {
        return;
    }
    let py = util::PyResponder::start(
        r#"
    if len(q) > 12 and int.from_bytes(q[0:2], "big") % 2 == 0:
        s.sendto(q[:2] + bytes([q[2] | 0x82, q[3]]) + q[4:], a)
"#,
    );
    let d = util::Scratch::new("rrl");
    let queries = d.path("q.txt");
    std::fs::write(&queries, "www.example.com A\nexample.com NS\n").unwrap();
    let (code, out, err) = run(&util::words(&format!(
        "load {} --dns-queries {queries} -n 400 --rate 2000 --timeout 0.1 --warmup 0 \
         --drain 0.2 --json -q",
        py.addr
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        util::counts(&v, ["received", "dns_truncated"]),
        [Some(200), Some(200)],
        "{v}"
    );
    let w = v["warnings"].to_string();
    assert!(w.contains("200 of 200 answers had TC set"), "{w}");
    assert!(w.contains("limiting its answers"), "{w}");
    assert!(
        !w.contains("does not keep up"),
        "capacity is not blamed: {w}"
    );
}

/// DNS load against servers that are not DNS: an echo sends each query
/// back (QR clear), another answers 3 bytes. Neither is an answer: none is
/// received, each is invalid and counted as not a DNS response, the text
/// says so, and the run exits 1 saying why.
#[test]
fn dns_load_counts_only_dns_responses_as_answers() {
    if !have("python3") {
        return;
    }
    let dir = util::Scratch::new("notdns");
    let q = dir.path("queries.txt");
    std::fs::write(&q, "www.example.com A\nexample.com NS\n").unwrap();
    let echo = util::Server::echo();
    let three = util::PyResponder::start("    s.sendto(q[:3], a)");
    for target in [echo.addr, three.addr] {
        let (code, out, err) = run(&util::words(&format!(
            "load {target} --dns-queries {q} -n 300 --rate 3000 --warmup 0 --drain 0.3"
        )));
        assert_eq!(code, 1, "{target}: {out} {err}");
        assert!(out.contains("recv            0"), "{target}: {out}");
        assert!(out.contains("not DNS responses"), "{target}: {out}");
        assert!(err.contains("not DNS responses"), "{target}: {err}");
        let (_, out, _) = run(&util::words(&format!(
            "load {target} --dns-queries {q} -n 300 --rate 3000 --warmup 0 --drain 0.3 --json -q"
        )));
        let v = util::json(&out);
        assert_eq!(
            util::counts(&v, ["received", "invalid", "dns_not_response"]),
            [Some(0), Some(300), Some(300)],
            "{target}: {v}"
        );
    }
}
