//! The `udpring` command: usage errors, a port in use, the echo server's
//! output and clean stop on SIGINT, and `bench --json` (`load`'s own are
//! in load.rs; the multicast and relay commands' in cli_multicast.rs).

mod util;

use std::net::UdpSocket;
use std::time::Duration;

use util::*;

#[test]
fn usage_errors_are_one_line_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["echo", "--workers", "many"], "--workers"),
        (
            &["echo", "--bind", "127.0.0.1"],
            "not an address with a port",
        ),
        (
            &["echo", "--bind", "300.0.0.1:5"],
            "not an address with a port",
        ),
        (&["echo", "--bind", "[::1]"], "after ']' comes ':PORT'"),
        (&["echo", "--backend", "dpdk"], "unknown backend"),
        // A flag that would silently do nothing (or wrap around) is refused.
        (&["echo", "--cpu", "4096"], "not a CPU index"),
        (&["load", "127.0.0.1:9", "--cpu", "4096"], "not a CPU index"),
        (&["echo", "--iface", "nosuch0"], "no interface nosuch0"),
        (
            &["load", "127.0.0.1:9", "--iface", "nosuch0"],
            "no interface nosuch0",
        ),
        (&["sink", "--iface", "nosuch0"], "no interface nosuch0"),
        // A file written after the run is checked before it.
        (
            &["load", "127.0.0.1:9", "--plot", "/nonexistent/x.svg"],
            "cannot write here",
        ),
        (
            &["load", "127.0.0.1:9", "--html", "/nonexistent/x.html"],
            "cannot write here",
        ),
        (&["echo", "--batch", "0"], "--batch must be 1..1024"),
        (&["echo", "--batch", "5000"], "--batch must be 1..1024"),
        (&["echo", "--duration", "-1"], "seconds must be > 0"),
        (&["echo", "--frobnicate"], "--frobnicate"),
        (&["bench", "--size", "65508"], "must be 32..65507"),
        (&["bench", "--bind", "192.0.2.1:0"], "loopback only"),
        (&["bench", "--backend", "xdp"], "veth pair or a NIC"),
        // The engine's refusals name the flag, not its Config field.
        (&["echo", "--slot-size", "1"], "--slot-size must be 217.."),
        (
            &["echo", "--recv-slots", "100000"],
            "--recv-slots must be 0..",
        ),
        (&["nosuchcommand"], "nosuchcommand"),
        // Addresses said wrong get told how to say them.
        (&["load", "[::1]9000"], "after ']' comes ':PORT'"),
        (&["load", "::1:9000"], "goes in brackets"),
        (&["load", "[fe80::1]:9000", "-n", "1"], "say its interface"),
        (&["ping", "[fe80::1]:9000", "-c", "1"], "say its interface"),
        (&["echo", "--bind", "[fe80::1]:9000"], "say its interface"),
        // Durations take units as latencies do; what conflicts says so.
        (&["load", "127.0.0.1:9", "-t", "2x"], "not a duration"),
        (
            &["load", "127.0.0.1:9", "--rate", "1k", "--unbounded"],
            "--unbounded cannot be combined with --rate",
        ),
        (
            &["load", "127.0.0.1:9", "--mode", "ping", "--window", "4"],
            "--window cannot be combined with --mode ping",
        ),
    ];
    assert_usage_errors(cases);
    let v = util::run_json(&words(
        "load 127.0.0.1:9 --match none --rate 100 -t 200ms --warmup 0 --json -q",
    ));
    let secs = v["duration_s"].as_f64().unwrap();
    assert!((0.15..1.0).contains(&secs), "-t 200ms ran {secs} s");
}

#[test]
fn help_teaches_the_commands() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["echo", "bench", "UDPRING_BACKEND", "Examples"] {
        assert!(out.contains(word), "--help lacks {word}: {out}");
    }
    let (code, out, _) = run(&["echo", "--help"]);
    assert_eq!(code, 0);
    for word in [
        "--bind",
        "--backend",
        "--gro",
        "--sockperf",
        "--workers",
        "--batch",
    ] {
        assert!(out.contains(word), "echo --help lacks {word}");
    }
}

#[test]
fn a_port_in_use_says_so() {
    let holder = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let bind = format!("127.0.0.1:{port}");
    let (code, _out, err) = run(&["echo", "--bind", &bind, "--duration", "1", "--workers", "1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("address already in use"), "{err}");
    assert!(err.contains(&bind), "{err}");
    assert!(
        err.contains(&format!("ss -ulpn 'sport = :{port}'")),
        "says how to find who: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn echo_prints_its_address_and_stops_cleanly_on_sigint_with_totals() {
    let echo = Server::start(&words("echo --bind 127.0.0.1:0 --workers 1 -q"));
    let c = client(false);
    for i in 0..5u8 {
        c.send_to(&[i; 10], echo.addr).unwrap();
        let mut buf = [0u8; 32];
        let (n, _) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[i; 10]);
    }
    util::signal(&echo.child, nix::sys::signal::Signal::SIGINT);
    let (code, rest, err) = echo.finish();
    assert_eq!(code, 0, "{err}");
    assert!(rest.contains("totals: received 5 sent 5"), "{rest}");
    assert!(rest.contains("slots-out 0/"), "{rest}");
}

#[test]
fn echo_duration_json_and_per_second_lines() {
    // With --json the banner and the live lines are on standard error;
    // standard output holds the JSON document alone.
    let echo = Server::start(&util::words(
        "echo --bind 127.0.0.1:0 --workers 1 --duration 1.5 --json --backend mmsg",
    ));
    let c = client(false);
    c.send_to(b"abc", echo.addr).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(c.recv_from(&mut buf).unwrap().0, 3);
    let (code, out, lines) = echo.finish();
    assert_eq!(code, 0, "{lines}");
    assert!(
        lines
            .lines()
            .any(|l| l.starts_with("t=") && l.contains("rx")),
        "{lines}"
    );
    let json = util::json(&out);
    assert_eq!(json["received"], 1);
    assert_eq!(json["sent"], 1);
    assert_eq!(json["slots_out"], 0);
}

#[test]
fn bench_json_has_a_run_per_case() {
    let (code, out, err) = run(&util::words(
        "bench --duration 0.2 --warmup 0.05 --backend simple,mmsg --size 64 --json",
    ));
    assert_eq!(code, 0, "{err}");
    let v = util::json(&out);
    let runs = v["rows"].as_array().unwrap();
    let rows = |workload: &str, gso: bool| -> Vec<&serde_json::Value> {
        runs.iter()
            .filter(|r| r["client"] == "udpring")
            .filter(|r| r["workload"] == workload && (r["gso_segments"].as_u64() > Some(1)) == gso)
            .collect()
    };
    let floods = rows("flood", false);
    assert_eq!(floods.len(), 2, "{v}");
    for (r, b) in floods.iter().zip(["simple", "mmsg"]) {
        assert_eq!(r["backend"], b);
        assert_eq!(r["size"], 64);
        let (sent, echoed) = (r["sent"].as_u64().unwrap(), r["received"].as_u64().unwrap());
        assert!(echoed > 0 && echoed <= sent, "{r}");
        for k in ["pps_received", "gbps_received"] {
            assert!(r[k].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    let pings = rows("ping", false);
    assert_eq!(pings.len(), 2, "{v}");
    for r in pings {
        assert!(r["rtt_us"]["p50"].as_f64().unwrap() > 0.0, "{r}");
    }
    let gso = rows("flood", true);
    assert_eq!(gso.len(), 1, "GSO/GRO on the best listed backend only: {v}");
    assert_eq!(gso[0]["backend"], "mmsg");
    assert!(gso[0]["received"].as_u64().unwrap() > 0, "{v}");
    // One C limit row per flood workload, on the same (best) echo.
    let c: Vec<&serde_json::Value> = runs.iter().filter(|r| r["client"] == "C limit").collect();
    assert_eq!(c.len(), 2, "{v}");
    for (r, segs) in c.iter().zip([1, gso[0]["gso_segments"].as_u64().unwrap()]) {
        assert_eq!(
            (r["backend"].as_str(), r["size"].as_u64()),
            (Some("mmsg"), Some(64))
        );
        assert_eq!(r["gso_segments"].as_u64(), Some(segs), "{r}");
        assert!(r["received"].as_u64().unwrap() > 0, "{r}");
    }
    let _ = Duration::ZERO;
}

#[test]
fn pmtu_and_ping_bad_input_is_one_line_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["pmtu", "no-such-host.invalid"], "cannot resolve"),
        (&["pmtu", "127.0.0.1:0"], "port 0"),
        (&["pmtu", "127.0.0.1:7", "--method", "guess"], "guess"),
        (&["pmtu", "127.0.0.1:7", "--floor", "20"], "--floor"),
        (&["ping", "no-such-host.invalid:7"], "cannot resolve"),
        (&["ping", "127.0.0.1:0"], "port 0"),
        (
            &["ping", "127.0.0.1:7", "--size", "70000"],
            "'--size <SIZE>': 70000 is not in 32..=65527",
        ),
        (
            &["ping", "127.0.0.1:7", "--backoff", "0.5"],
            "--backoff 0.5 must be 1..100",
        ),
        (&["ping", "127.0.0.1:7", "--attempts", "0"], "--attempts"),
    ];
    assert_usage_errors(cases);
}

#[test]
fn ping_against_echo_and_against_nobody() {
    let echo = Server::echo();
    let addr = echo.addr;
    let (code, out, err) = run(&["ping", &addr.to_string(), "-c", "3", "-i", "0", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = util::json(&out);
    assert_eq!(v["replies"], 3, "{v}");
    // The server's `--bind 0.0.0.0:PORT` copied as the target: the kernel
    // sends to this host, and the replies (from 127.0.0.1) count.
    let any = format!("0.0.0.0:{}", addr.port());
    let (code, out, err) = run(&["ping", &any, "-c", "2", "-i", "0"]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("2 requests, 2 replies"), "{out}");
    drop(echo);
    // A socket that reads and never answers: the schedule runs out.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (code, out, err) = run(&util::words(&format!(
        "ping {} -c 1 --timeout 0.01 --attempts 3",
        silent.local_addr().unwrap()
    )));
    assert_eq!(code, 1, "{out} {err}");
    assert!(
        out.contains("looks down") && out.contains("2 retransmissions"),
        "{out}"
    );
    // Nothing bound: the kernel's port unreachable ends each request at
    // its first send, long before a schedule of 10 s would.
    let closed = silent.local_addr().unwrap();
    drop(silent);
    for target in [closed.to_string(), format!("[::1]:{}", closed.port())] {
        let (code, out, err) = run(&util::words(&format!(
            "ping {target} -c 2 -i 0 --timeout 5 --attempts 2"
        )));
        assert_eq!(code, 1, "{out} {err}");
        assert!(
            out.matches("port unreachable").count() == 2
                && out.contains("0 retransmissions, 0 looked down, 2 unreachable")
                && err.contains("is a server listening there?"),
            "{out} {err}"
        );
    }
}

#[test]
fn ping_stops_on_sigint_with_its_summary() {
    // A request that would wait 5 s for a silent server; SIGINT ends it.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut child = util::udpring()
        .args(util::words(&format!(
            "ping {} -c 100 --timeout 5 --attempts 1",
            silent.local_addr().unwrap()
        )))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 128];
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    silent.recv_from(&mut buf).expect("the first request");
    util::signal(&child, nix::sys::signal::Signal::SIGINT);
    let (status, _) = util::wait_at_most(&mut child, Duration::from_secs(3), "ping after SIGINT");
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{out} {err}");
    assert!(out.contains("1 requests, 0 replies"), "{out}");
    assert!(
        err.contains("no replies") && err.contains("before the stop"),
        "{err}"
    );
}

#[test]
fn backend_env_var_forces_a_backend_and_rejects_unknown_names() {
    // Run in a child process so the environment of this one is untouched.
    let exe = env!("CARGO_BIN_EXE_udpring");
    for (val, want) in [("simple", "backend simple"), ("mmsg", "backend mmsg")] {
        let out = std::process::Command::new(exe)
            .args(util::words(
                "echo --bind 127.0.0.1:0 --workers 1 --duration 0.2 -q",
            ))
            .env("UDPRING_BACKEND", val)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(want), "{val}: {text}");
    }
    let out = std::process::Command::new(exe)
        .args(["echo", "--bind", "127.0.0.1:0", "--duration", "0.2"])
        .env("UDPRING_BACKEND", "bogus")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("UDPRING_BACKEND") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn completions_and_man_pages_come_from_the_parser() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, out, err) = run(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        // Subcommands two levels down and their options are in it.
        assert!(
            out.contains("mcast") && out.contains("--payload-file"),
            "{shell}"
        );
    }
    let (_, script, _) = run(&["completions", "bash"]);
    let path = std::env::temp_dir().join(format!("udpring-{}.bash", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    let ok = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(ok.success(), "bash -n on the completion script");
    let (code, _, err) = run(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");

    let (code, page, _) = run(&["man"]);
    assert_eq!(code, 0);
    assert!(page.contains(".TH udpring 1"), "a roff page: {page}");
    // A directory that is not there yet is made.
    let top = std::env::temp_dir().join(format!("udpring-man-{}", std::process::id()));
    let dir = top.join("man1");
    let _ = std::fs::remove_dir_all(&top);
    let (code, _, err) = run(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for page in [
        "udpring.1",
        "udpring-load.1",
        "udpring-mcast-ping.1",
        "udpring-man.1",
    ] {
        assert!(dir.join(page).exists(), "{page}");
    }
    if util::have("man") {
        // man renders the page, options and their help included.
        let out = std::process::Command::new("man")
            .arg("-l")
            .arg(dir.join("udpring-mcast-ping.1"))
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("SYNOPSIS") && text.contains("--payload") && text.contains("--expect"),
            "{text}"
        );
    }
    let _ = std::fs::remove_dir_all(&top);
}
