//! The command on a hostile or careless input, on loopback: a relay that
//! must not loop, sends that fail per destination, a broken pipe, inputs
//! the code cannot represent, result files that are not files, figures
//! that would not read back, a truncating echo under `pmtu` and `bench`,
//! too few open files.

mod util;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::*;

fn usage_error(args: &[&str], needle: &str) {
    let (code, _out, err) = run(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
}

#[test]
fn a_relay_to_an_echo_does_not_loop() {
    let echo = Server::start(&words(
        "echo --bind 127.0.0.1:0 -w 1 -q --json --duration 2",
    ));
    let sink = client(false);
    let to = format!("{},{}", echo.addr, sink.local_addr().unwrap());
    let relay = Server::start(&words(&format!(
        "fanout --listen 127.0.0.1:0 --to {to} --duration 1.5 -q --json -w 1"
    )));
    client(false).send_to(b"once", relay.addr).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = sink.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"once");
    sink.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    assert!(
        sink.recv_from(&mut buf).is_err(),
        "the sink got a second copy"
    );
    let v = relay.json();
    assert_eq!(v["received"], 1, "{v}");
    assert_eq!(v["answers"], 0, "the echo did not answer the relay: {v}");
    assert_eq!(v["sent"], 2, "{v}");
    let e = echo.json();
    assert_eq!(
        counts(&e, ["guard_marked", "sent"]),
        [Some(1), Some(0)],
        "the relay's copy carried the server mark: {e}"
    );
}

#[test]
fn a_relay_counts_failed_sends_per_destination_and_other_errors() {
    let sink = client(false);
    // The limited broadcast without SO_BROADCAST: every send refused.
    let to = format!("255.255.255.255:9,{}", sink.local_addr().unwrap());
    let relay = Server::start(&words(&format!(
        "fanout --listen 127.0.0.1:0 --to {to} --duration 1 -q --json -w 1"
    )));
    let src = client(false);
    for i in 0..20u8 {
        src.send_to(&[i], relay.addr).unwrap();
    }
    let mut buf = [0u8; 4];
    for _ in 0..20 {
        sink.recv_from(&mut buf).unwrap();
    }
    let v = relay.json();
    let d = &v["destinations"];
    let sent = |d: &serde_json::Value| counts(d, ["forwarded", "failed"]);
    assert_eq!(sent(&d[0]), [Some(0), Some(20)], "{v}");
    assert_eq!(sent(&d[1]), [Some(20), Some(0)], "{v}");
    assert_eq!(v["send_errors"], serde_json::json!({"EACCES": 20}), "{v}");
}

#[test]
fn a_relay_to_itself_is_refused() {
    usage_error(
        &[
            "fanout",
            "--listen",
            "127.0.0.1:7777",
            "--to",
            "127.0.0.1:7777",
        ],
        "is --listen itself",
    );
}

#[test]
fn a_closed_pipe_ends_the_server_quietly_with_totals() {
    let mut child = udpring()
        .args(words("echo --bind 127.0.0.1:0 -w 1 --duration 20"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let line = util::first_line(child.stdout.take().unwrap()); // like `| head -1`
    assert!(line.contains("listening on"), "{line}");
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "ends at the next line it writes"
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("totals:"), "the totals go to stderr: {err}");
    assert!(status.success(), "{status:?} {err}");
}

/// `udpring ARGS` run by bash after `ulimit LIMIT`: exit code, stdout,
/// stderr.
fn run_limited(limit: &str, args: &str) -> (i32, String, String) {
    run_limited_by(Command::new("bash"), limit, args)
}

/// [`run_limited`] with the shell `sh` (a command that runs bash: dash's
/// `ulimit` has no `-u`).
fn run_limited_by(mut sh: Command, limit: &str, args: &str) -> (i32, String, String) {
    let out = sh
        .arg("-c")
        .arg(format!("ulimit {limit} && exec \"$0\" {args}"))
        .arg(env!("CARGO_BIN_EXE_udpring"))
        .env_remove("UDPRING_BACKEND")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn out_of_open_files_says_the_limit_and_a_low_soft_limit_is_raised() {
    // Five: the standard three and two more, too few for a worker.
    let (code, _, err) = run_limited("-n 5", "echo --bind 127.0.0.1:0 -w 1 --duration 1");
    assert_eq!(code, 1, "{err}");
    for needle in [
        "Too many open files",
        "may hold 5 open files (`ulimit -n`)",
        "raise the limit",
    ] {
        assert!(err.contains(needle), "'{needle}' not in {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // A soft limit under the hard one is raised at start: 64 flows, a
    // socket each, under a soft limit of 16.
    use nix::sys::resource::{Resource, getrlimit};
    let hard = getrlimit(Resource::RLIMIT_NOFILE).unwrap().1;
    if hard < 256 {
        eprintln!("skipped the raise: this process's hard limit is {hard} open files");
        return;
    }
    let echo = Server::echo();
    let (code, out, err) = run_limited(
        "-S -n 16",
        &format!("load {} --flows 64 -n 640 --json -q", echo.addr),
    );
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert_eq!(
        counts(&v, ["sent", "received"]),
        [Some(640), Some(640)],
        "{v}"
    );
}

/// bash without `CAP_IPC_LOCK` and held to `RLIMIT_NPROC`: as nobody when
/// this is root.
fn sh_unprivileged() -> Command {
    if nix::unistd::geteuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"]);
        c
    } else {
        Command::new("bash")
    }
}

#[test]
fn a_ring_over_the_locked_memory_limit_says_the_limit_and_bench_runs_without() {
    // A ring's memory counts against RLIMIT_MEMLOCK without CAP_IPC_LOCK.
    let (code, _, err) = run_limited_by(
        sh_unprivileged(),
        "-l 64",
        "echo --bind 127.0.0.1:0 -w 1 --backend uring --duration 1",
    );
    if code == 0 {
        eprintln!(
            "skipped: this kernel does not count a ring against RLIMIT_MEMLOCK (before 6.13)"
        );
        return;
    }
    assert_eq!(code, 1, "{err}");
    for needle in [
        "Cannot allocate memory",
        "may lock 64 KiB (`ulimit -l`",
        "a ring of 1024 entries",
        "mmsg backend",
    ] {
        assert!(err.contains(needle), "'{needle}' not in {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The main job leaves uring out, says why, and runs the rest.
    let (code, out, err) = run_limited_by(
        sh_unprivileged(),
        "-l 64",
        "bench --only ping --duration 0.2 --warmup 0 --json",
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("skipping uring: worker 0: Cannot allocate memory"),
        "{err}"
    );
    let rows = json(&out)["rows"].as_array().cloned().unwrap_or_default();
    let backends: Vec<_> = rows.iter().map(|r| r["backend"].as_str()).collect();
    assert_eq!(backends, [Some("simple"), Some("mmsg")], "{out}");
}

#[test]
fn out_of_threads_says_the_limit_instead_of_panicking() {
    // One process for the user (root is not held to RLIMIT_NPROC): the
    // command's main thread, and no thread more.
    for cmd in [
        "echo --bind 127.0.0.1:0 -w 1 --duration 1",
        "load 127.0.0.1:9 -t 0.2",
        "reference sink --bind 127.0.0.1:0 --duration 0.2",
    ] {
        let (code, _, err) = run_limited_by(sh_unprivileged(), "-u 1", cmd);
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(!err.contains("panicked"), "{cmd}: {err}");
        assert!(
            err.contains("no thread could be started") && err.contains("`ulimit -u`"),
            "{cmd}: {err}"
        );
    }
}

#[test]
fn a_privileged_port_says_what_it_takes() {
    let first: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .map_or(1024, |v| v.trim().parse().unwrap_or(1024));
    if first <= 53 {
        eprintln!("skipped: any user may bind port 53 here (ip_unprivileged_port_start {first})");
        return;
    }
    let (code, _, err) = run_limited_by(
        sh_unprivileged(),
        "-n 64",
        "echo --bind 127.0.0.1:53 -w 1 --duration 1",
    );
    assert_eq!(code, 1, "{err}");
    for needle in [
        "bind 127.0.0.1:53: Permission denied",
        &format!("ports below {first} need root or CAP_NET_BIND_SERVICE"),
    ] {
        assert!(err.contains(needle), "'{needle}' not in {err}");
    }
}

#[test]
fn sighup_stops_with_totals_like_sigterm() {
    let echo = Server::start(&words("echo --bind 127.0.0.1:0 -w 1 -q"));
    let c = client(false);
    c.send_to(b"x", echo.addr).unwrap();
    let mut buf = [0u8; 4];
    c.recv_from(&mut buf).unwrap();
    util::signal(&echo.child, nix::sys::signal::Signal::SIGHUP);
    let (code, rest, err) = echo.finish();
    assert_eq!(code, 0, "{err}");
    assert!(rest.contains("totals: received 1 sent 1"), "{rest}");
}

#[test]
fn numbers_the_code_cannot_represent_are_refused() {
    for (args, needle) in [
        (
            &["mcast", "send", "239.1.1.1:5000", "--count", "0"][..],
            "--count 0",
        ),
        (
            &[
                "mcast",
                "ping",
                "239.1.1.1:5000",
                "--count",
                "18446744073709551615",
            ],
            "--count 18446744073709551615",
        ),
        (
            &["mcast", "send", "239.1.1.1:5000", "--rate", "1e-9"],
            "--rate",
        ),
        // load's units: 20M read as 20,000,000 (then out of range).
        (
            &["mcast", "send", "239.1.1.1:5000", "--rate", "20M"],
            "--rate 20000000 must be 0.001..10M",
        ),
        (
            &[
                "mcast",
                "send",
                "239.1.1.1:5000",
                "--rate",
                "0.001",
                "--count",
                "100000",
            ],
            "more than a year",
        ),
        (
            &["load", "127.0.0.1:9", "--flows", "1025"],
            "--flows 1025 must be 1..1024",
        ),
        (&["load", "127.0.0.1:9", "--count", "0"], "--count"),
        (&["echo", "--workers", "4096"], "--workers 4096"),
        (&["echo", "--per-source-rate", "0"], "--per-source-rate"),
        (&["echo", "--allow", "10.0.0.0/40"], "prefix length"),
    ] {
        usage_error(args, needle);
    }
}

#[test]
fn output_files_fail_before_the_run_and_are_written_only_after_it() {
    let start = Instant::now();
    let (code, _o, err) = run(&words(
        "load 127.0.0.1:9 -t 30 --hist-out /nonexistent/dir/x.hgrm",
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("/nonexistent/dir/x.hgrm"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "it did not run the 30 s first"
    );

    // A command that fails before it has a distribution to write leaves an
    // existing file as it was, and makes no empty one.
    let d = Scratch::new("outfile");
    let kept = d.path("kept.hgrm");
    std::fs::write(&kept, "an earlier run's percentiles\n").unwrap();
    let fresh = d.path("fresh.hgrm");
    for out in [&kept, &fresh] {
        usage_error(
            &["report", "/dev/zero", "--hist-out", out],
            "not a regular file",
        );
    }
    assert_eq!(
        std::fs::read_to_string(&kept).unwrap(),
        "an earlier run's percentiles\n",
        "a failed report must not truncate its --hist-out"
    );
    assert!(
        !std::path::Path::new(&fresh).exists(),
        "an empty file was left"
    );
}

#[test]
fn report_reads_files_and_pipes_it_can_read_back() {
    let d = Scratch::new("report");
    // A device can be endless (a terminal waits): refused.
    usage_error(&["report", "/dev/zero"], "not a regular file or a pipe");
    // What a failed `load --json > FILE` leaves: said as that.
    let empty = d.path("empty.json");
    std::fs::write(&empty, "\n").unwrap();
    usage_error(&["report", &empty], "the file is empty (a run that failed");

    // A real result to vary.
    let echo = Server::echo();
    let mut v = run_json(&words(&format!("load {} -n 100 --json -q", echo.addr)));
    drop(echo);
    // Through a FIFO, as `report <(ssh host cat result.json)` reads a
    // pipe: the same run back.
    let fifo = d.path("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success(), "mkfifo");
    let (text, to) = (v.to_string(), fifo.clone());
    let writer = std::thread::spawn(move || std::fs::write(to, text).unwrap());
    let back = run_json(&["report", &fifo, "--json"]);
    writer.join().unwrap();
    assert_eq!(
        (back["sent"].as_u64(), back["received"].as_u64()),
        (v["sent"].as_u64(), v["received"].as_u64()),
        "{back}"
    );
    // Counts near the top of u64: merged, they would not fit; refused
    // rather than clamped to 2^64-1 (which reads as a count).
    let mut near = v.clone();
    near["sent"] = serde_json::json!(u64::MAX - 5);
    let big = d.path("big.json");
    std::fs::write(&big, near.to_string()).unwrap();
    usage_error(
        &["report", &big, &big, "--allow-duplicates"],
        "sent: the results add up",
    );
    // A document of another shape version.
    let mut other = v.clone();
    other["schema"] = serde_json::json!(99);
    let s99 = d.path("schema99.json");
    std::fs::write(&s99, other.to_string()).unwrap();
    usage_error(&["report", &s99], "schema 99");
    // A schema-1 result (counts and kernel figures nested, each also
    // under a second name) is still read, as the same run.
    let mut v1 = v.clone();
    let top = v1.as_object_mut().unwrap();
    let mut counts = serde_json::Map::new();
    for k in ["timeouts", "stale", "errors", "warmup_replies", "sent"] {
        counts.insert(k.into(), top[k].clone());
    }
    top.remove("timeouts");
    let mut kernel = serde_json::Map::new();
    kernel.insert("drops".into(), top.remove("kernel_drops").unwrap());
    kernel.insert("received_bufs".into(), top.remove("received_bufs").unwrap());
    top.insert("counts".into(), counts.into());
    top.insert("kernel".into(), kernel.into());
    top.insert("schema".into(), 1.into());
    let s1 = d.path("schema1.json");
    std::fs::write(&s1, v1.to_string()).unwrap();
    let back = run_json(&["report", &s1, "--json"]);
    for k in [
        "sent",
        "received",
        "timeouts",
        "received_bufs",
        "kernel_drops",
    ] {
        assert_eq!(back[k], v[k], "{k}: {back}");
    }
    // A run no udpring made: a duration of 1e308 seconds.
    let mut long = v.clone();
    long["duration_s"] = serde_json::json!(1e308);
    let forever = d.path("forever.json");
    std::fs::write(&forever, long.to_string()).unwrap();
    usage_error(&["report", &forever], "duration_s");
    // Rates that add up to infinity cannot be written as JSON: refused.
    v["pps_sent"] = serde_json::json!(1.5e308);
    let huge = d.path("huge.json");
    std::fs::write(&huge, v.to_string()).unwrap();
    usage_error(&["report", &huge, &huge, "--allow-duplicates"], "pps_sent");
    // A file too large to be a result.
    let fat = d.path("fat.json");
    std::fs::File::create(&fat)
        .unwrap()
        .set_len(65 << 20)
        .unwrap();
    usage_error(&["report", &fat], "at most");
}

#[test]
fn pmtu_through_an_echo_that_cuts_says_so_and_finds_the_path() {
    let echo = Server::echo();
    let (code, out, err) = run(&words(&format!(
        "pmtu {} --method plpmtud --json --timeout 0.2",
        echo.addr
    )));
    drop(echo);
    assert_eq!(code, 0, "{err}");
    let v = util::json(&out);
    let lo_mtu: u64 = std::fs::read_to_string("/sys/class/net/lo/mtu")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // An IP packet is at most 65535 bytes, whatever lo's MTU says.
    let path = lo_mtu.min(65535);
    assert_eq!(
        v["pmtu"].as_u64(),
        Some(path),
        "the path, not the echo's slot: {v}"
    );
    assert!(v["echo_cut_at"].as_u64().is_some(), "{v}");
    assert!(err.contains("cut"), "{err}");
}

#[test]
fn bench_does_not_count_cut_echoes() {
    let v = run_json(&words(
        "bench --backend mmsg --size 5000 --only flood --duration 0.5 --warmup 0.1 --json",
    ));
    let r = &v["rows"][0];
    assert_eq!(r["size"], 5000);
    assert_eq!(r["truncated"], 0, "{r}");
    assert!(r["received"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn guard_flags_reach_the_engine() {
    let echo = Server::start(&words(
        "echo --bind 127.0.0.1:0 -w 1 -q --duration 1 --json --allow 127.0.0.2,127.0.0.3/32",
    ));
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    for _ in 0..3 {
        c.send_to(b"x", echo.addr).unwrap();
    }
    // Each prefix of the comma-separated list lets its source in.
    for allowed in ["127.0.0.2:0", "127.0.0.3:0"] {
        let a = UdpSocket::bind(allowed).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        a.send_to(b"y", echo.addr).unwrap();
        let mut buf = [0u8; 8];
        let got = a.recv_from(&mut buf);
        assert!(matches!(got, Ok((1, _))), "{allowed}: {got:?}");
    }
    let v = echo.json();
    assert_eq!(
        counts(&v, ["guard_not_allowed", "sent"]),
        [Some(3), Some(2)],
        "{v}"
    );
}

/// Standard base64 (for the hostile logs below).
fn b64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            s.push(if k <= c.len() {
                A[(n >> (18 - 6 * k) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    s
}

/// An interval log of one interval whose histogram is `encoded`.
fn one_interval_log(encoded: &[u8]) -> String {
    format!(
        "#[StartTime: 1700000000.000 (seconds since epoch)]\n\
         \"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n\
         0.000,1.000,0.000,{}\n",
        b64(encoded)
    )
}

/// A 208-byte interval log whose V2 header declares 0xfffffff0 bytes of
/// counts allocated and touched 4 GB; a 544 KB zlib bomb reached 397 MB.
/// Both are refused, exit 2, under a 200 MB address-space limit
/// (`prlimit`).
#[test]
fn hostile_interval_logs_exit_2_under_200_mb() {
    if !util::have("prlimit") {
        return;
    }
    let d = Scratch::new("hostile-logs");
    // V2 cookie, payload length, normalizing offset, 3 digits, 1 .. 60 s,
    // ratio 1.0: a valid header that asks for 4 GB of counts.
    let mut v2 = 0x1c84_9313u32.to_be_bytes().to_vec();
    v2.extend_from_slice(&0xffff_fff0u32.to_be_bytes());
    v2.extend_from_slice(&0u32.to_be_bytes());
    v2.extend_from_slice(&3u32.to_be_bytes());
    v2.extend_from_slice(&1u64.to_be_bytes());
    v2.extend_from_slice(&60_000_000_000u64.to_be_bytes());
    v2.extend_from_slice(&1.0f64.to_be_bytes());
    v2.extend_from_slice(&[0; 16]);
    let big = d.path("big.hlog");
    std::fs::write(&big, one_interval_log(&v2)).unwrap();
    // The compressed cookie over 64 MiB of zeros after a V2 cookie.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&0x1c84_9313u32.to_be_bytes()).unwrap();
    for _ in 0..64 {
        z.write_all(&[0u8; 1 << 20]).unwrap();
    }
    let body = z.finish().unwrap();
    let mut bomb = 0x1c84_9314u32.to_be_bytes().to_vec();
    bomb.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bomb.extend_from_slice(&body);
    let zip = d.path("bomb.hlog");
    std::fs::write(&zip, one_interval_log(&bomb)).unwrap();
    for (file, needle) in [(&big, "follow"), (&zip, "inflates past")] {
        let out = Command::new("prlimit")
            .arg("--as=200000000")
            .arg(env!("CARGO_BIN_EXE_udpring"))
            .args(["report", "--interval-logs", file])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {err}");
        assert!(err.contains(needle), "{file}: {err}");
    }
}
