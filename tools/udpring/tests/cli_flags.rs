//! Each flag does what it says, or the command refuses it: a flag that
//! would mean nothing in the run asked for (an option of another mode,
//! backend or kind of target) is a usage error, and one that applies is
//! honoured. Loopback and `lo` only.

mod util;

use std::net::UdpSocket;

use util::{run, words};

#[test]
fn flags_that_would_mean_nothing_are_refused_not_ignored() {
    let one_way = |flag: &'static [&'static str]| -> Vec<&'static str> {
        let mut v = vec!["load", "127.0.0.1:9", "-n", "5", "--match", "none"];
        v.extend_from_slice(flag);
        v
    };
    let (timeout, drain, as_latency) = (
        one_way(&["--timeout", "0.5"]),
        one_way(&["--drain", "2"]),
        one_way(&["--timeouts-as-latency"]),
    );
    // A threshold a one-way run would pass whatever happened, and outputs
    // of RTTs it cannot have.
    let (max_loss, max_p99, plot) = (
        one_way(&["--max-loss", "1"]),
        one_way(&["--max-p99", "2ms", "--hist-log", "x.hlog"]),
        one_way(&["--plot", "x.svg"]),
    );
    util::assert_usage_errors(&[
        (
            &["load", "127.0.0.1:9", "--arrivals", "poisson"],
            "--arrivals poisson spaces a paced run's sends",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--arrivals",
                "poisson",
                "--burst",
                "10",
                "--burst-interval",
                "0.01",
            ],
            "(not --burst or --pcap-timing)",
        ),
        (
            &["load", "127.0.0.1:9", "--arrivals", "random"],
            "possible values: even, poisson",
        ),
        (
            &["load", "127.0.0.1:9", "--match", "none", "--expect", "0:00"],
            "--match none is one-way: no answer comes back for --expect to check",
        ),
        (
            &["load", "127.0.0.1:9", "--expect", "56414c5545"],
            "'56414c5545': give OFFSET:HEX",
        ),
        (
            &["load", "127.0.0.1:9", "--max-unexpected", "1"],
            "--max-unexpected bounds the answers --expect finds",
        ),
        (&max_loss, "so --max-loss means nothing"),
        (&max_p99, "so --hist-log and --max-p99 mean nothing"),
        (&plot, "so --plot means nothing"),
        (
            &timeout,
            "--match none is one-way: no request waits for a reply",
        ),
        (
            &drain,
            "--match none is one-way: no request waits for a reply",
        ),
        (
            &as_latency,
            "--match none is one-way: no request waits for a reply",
        ),
        (
            &[
                "fanout",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--expiry",
                "5",
            ],
            "required arguments were not provided: --control",
        ),
        (
            &["echo", "--bind", "127.0.0.1:0", "--v6only"],
            "--v6only/--dual-stack: IPV6_V6ONLY is for IPv6 sockets",
        ),
        (
            &["load", "127.0.0.1:9", "--dual-stack"],
            "every socket here is IPv4",
        ),
        (
            &[
                "fanout",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--to",
                "127.0.0.1:9",
            ],
            "--to 127.0.0.1:9 is given twice",
        ),
        // Options of what this run does not do.
        (
            &["echo", "--bind", "127.0.0.1:0", "--batch", "8"],
            "--batch 8 sets the datagrams per recvmmsg/sendmmsg call of --backend mmsg",
        ),
        (
            &[
                "echo",
                "--bind",
                "0.0.0.0:0",
                "--backend",
                "xdp",
                "--iface",
                "lo",
                "--no-coalesce",
            ],
            "--no-coalesce: --backend xdp sends one frame per datagram and never coalesces",
        ),
        (
            &[
                "echo",
                "--bind",
                "127.0.0.1:0",
                "--batch",
                "8",
                "--backend",
                "simple",
            ],
            "--backend simple makes no such call",
        ),
        (
            &[
                "echo",
                "--bind",
                "127.0.0.1:0",
                "--discard",
                "--reflect-tos",
            ],
            "'--discard' cannot be used with '--reflect-tos'",
        ),
        (
            &["echo", "--bind", "127.0.0.1:0", "--no-pin", "--cpu", "1"],
            "'--no-pin' cannot be used with '--cpu",
        ),
        (
            &[
                "echo",
                "--bind",
                "127.0.0.1:0",
                "--no-guard",
                "--allow",
                "10.0.0.0/8",
            ],
            "'--no-guard' cannot be used with '--allow",
        ),
        (
            &[
                "fanout",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--no-guard",
                "--per-source-rate",
                "5",
            ],
            "'--no-guard' cannot be used with '--per-source-rate",
        ),
        (
            &["sink", "--bind", "127.0.0.1:0", "--iface", "lo"],
            "--iface lo is the interface the xdp backend attaches to",
        ),
        (
            &[
                "fanout",
                "--listen",
                "127.0.0.1:0",
                "--to",
                "127.0.0.1:9",
                "--ttl",
                "4",
            ],
            "--ttl 4 is the TTL of what is sent to a group, and no --to is one",
        ),
        (
            &["echo", "--bind", "127.0.0.1:0", "--iface", "lo"],
            "--iface lo is the interface the xdp backend attaches to",
        ),
        (
            &["pmtu", "[::1]:9", "--floor", "1300"],
            "--floor 1300 is plpmtud's IPv4 floor: an IPv6 path's floor is 1280",
        ),
        (
            &["pmtu", "127.0.0.1:9", "--floor", "1300", "--method", "icmp"],
            "--method icmp sends no plpmtud probe",
        ),
        (
            &["ping", "127.0.0.1:9", "--attempts", "1", "--backoff", "3"],
            "--backoff shapes the waits between retransmissions, and --attempts 1",
        ),
        (
            &[
                "ping",
                "127.0.0.1:9",
                "--timeout",
                "2",
                "--max-timeout",
                "1",
            ],
            "--max-timeout 1.000 s is below --timeout 2.000 s",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--match",
                "none",
                "--rate-steps",
                "10:20:5",
            ],
            "--match none is one-way: nothing comes back to measure, so --rate-steps means nothing",
        ),
        (
            &[
                "load",
                "127.0.0.1:9",
                "--payload",
                "0011",
                "--match",
                "flow",
                "--gso",
                "4",
            ],
            "--match flow keeps one request in flight per flow (ping) unless --rate paces it",
        ),
        (
            &["report", "--interval-logs", "x.hlog", "--allow-mixed"],
            "'--interval-logs' cannot be used with '--allow-mixed'",
        ),
        (
            &["report", "--diff", "a.json", "b.json", "--allow-duplicates"],
            "'--diff <A> <B>' cannot be used with '--allow-duplicates'",
        ),
        (
            &["man", "--dir", "/dev/null"],
            "--dir /dev/null: not a directory",
        ),
        // Commands of one host, given a group (an IPv6 group on `lo`,
        // which has no multicast route: nothing could leave if one ran).
        (
            &["ping", "[ff12::1%lo]:9", "-c", "1"],
            "is a multicast group, and `ping` measures one server's answers",
        ),
        (
            &["pmtu", "[ff12::1%lo]:9"],
            "is a multicast group, and `pmtu` measures the path MTU",
        ),
        // Options of the flood rows, where only ping rows run.
        (
            &["bench", "--only", "ping", "--window", "8"],
            "--window shapes the flood rows, and --only ping runs none",
        ),
        (
            &["bench", "--only", "ping", "--gso-segments", "8"],
            "--gso-segments shapes the flood rows",
        ),
        (
            &["bench", "--only", "ping", "--no-c-limit"],
            "--no-c-limit shapes the flood rows",
        ),
    ]);
}

#[test]
fn a_load_to_a_group_leaves_by_the_interface_it_is_given() {
    use std::net::Ipv4Addr;
    // A group and port of this process's own, joined on `lo` alone: what
    // leaves by another interface (the route's) is not heard here.
    let group = Ipv4Addr::new(239, 255, 72, (std::process::id() % 200 + 1) as u8);
    let member = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    member
        .join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)
        .unwrap();
    member
        .set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .unwrap();
    let target = format!("{group}:{}", member.local_addr().unwrap().port());
    let (code, out, err) = run(&words(&format!(
        "load {target} --iface lo --match none -n 20 --rate 1000 --warmup 0"
    )));
    assert_eq!(code, 0, "{out}{err}");
    let mut buf = [0u8; 2048];
    let mut heard = 0;
    while heard < 20 && member.recv_from(&mut buf).is_ok() {
        heard += 1;
    }
    assert_eq!(heard, 20, "sent by lo, heard on lo: {out}");
    // Over sockets to a unicast target, --iface would mean nothing.
    util::assert_usage_errors(&[(
        &["load", "127.0.0.1:9", "--iface", "lo"],
        "--iface (without --backend xdp) is for a multicast target; 127.0.0.1:9 is unicast",
    )]);
}

/// A flood from one client makes the echo send its replies as coalesced
/// trains (the client still gets every echo, as sent); `--no-coalesce`
/// sends each by itself.
#[test]
fn no_coalesce_sends_each_echo_by_itself() {
    for (flag, trains) in [("", true), ("--no-coalesce", false)] {
        let echo = util::Server::start(&words(&format!(
            "echo --bind 127.0.0.1:0 -w 1 --json --duration 1.5 {flag}"
        )));
        let (code, out, err) = run(&words(&format!("load {} -t 0.5 --json -q", echo.addr)));
        assert_eq!(code, 0, "{err}");
        assert_eq!(util::json(&out)["lost"], 0, "every echo came back");
        let (_, out, _) = echo.finish();
        let v = util::json(&out);
        let coalesced = v["coalesced"].as_u64().unwrap();
        let (sent, bufs) = (
            v["sent"].as_u64().unwrap(),
            v["sent_bufs"].as_u64().unwrap(),
        );
        assert_eq!(coalesced > 0, trains, "{flag}: {v}");
        assert_eq!(sent > bufs, trains, "{flag}: {v}");
    }
}

/// An echo started with `flags` and pinged 500 times in closed loop by a
/// busy-polling client (`ping`; else sent 500 unanswered): its banner, its
/// JSON totals, and its
/// CPU time in ms over 300 ms of idleness after the load.
fn echo_loaded_then_idle(flags: &str, ping: bool) -> (String, serde_json::Value, f64) {
    let echo = util::Server::start(&words(&format!(
        "echo --bind 127.0.0.1:0 -w 1 --json --duration 1.2 {flags}"
    )));
    let (addr, banner) = (echo.addr, echo.banner.clone());
    // The client busy-polls: its turnaround is then a few microseconds,
    // and a request comes within the echo's spin whatever this host's
    // wake-ups cost (a client asleep between replies took 50 µs and more
    // to ask again on a busy host, and the spin missed every time).
    let load = if ping {
        "--mode ping --busy-poll"
    } else {
        "--match none"
    };
    let (code, _, lerr) = run(&words(&format!("load {addr} {load} -n 500 --json -q")));
    assert_eq!(code, 0, "{flags}: {lerr}");
    // Every thread's run time (ns), from the scheduler's account.
    let cpu_ns = || -> u64 {
        std::fs::read_dir(format!("/proc/{}/task", echo.child.id()))
            .unwrap()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = cpu_ns();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let idle_ms = cpu_ns().saturating_sub(before) as f64 / 1e6;
    let (code, out, err) = echo.finish();
    assert_eq!(code, 0, "{flags}: {banner}{err}");
    (banner, util::json(&out), idle_ms)
}

/// The echo spins 50 µs before sleeping by default (a closed loop is
/// taken while it spins, and idle it costs nothing), not with `--spin 0`,
/// a backend other than uring or `--discard`; `--spin MICROS` sets the
/// window. Without the spin a uring echo parks in `recvmsg` instead,
/// not with `--no-park`. A busy-polling echo, the measure's control,
/// reads a whole CPU idle. What `--spin` cannot mean is refused.
#[test]
fn spin_is_the_echos_default_and_costs_nothing_idle() {
    for (flags, ping, spins, parks) in [
        ("", true, Some(50), Some(false)),
        ("--spin 1000", true, Some(1000), Some(false)),
        ("--spin 0", true, None, Some(true)),
        ("--spin 0 --no-park", true, None, Some(false)),
        ("--backend mmsg", true, None, Some(false)),
        ("--discard", false, None, None),
    ] {
        let (banner, v, idle_ms) = echo_loaded_then_idle(flags, ping);
        if let Some(parks) = parks {
            let parked = v["parked_waits"].as_u64().unwrap();
            assert_eq!(parked > 0, parks, "{flags}: {v}");
        }
        let hits = v["spin_hits"].as_u64().unwrap();
        match spins {
            Some(us) => {
                assert!(
                    banner.contains(&format!(", spin {us} us")),
                    "{flags}: {banner}"
                );
                assert!(hits > 0, "{flags}: {v}");
            }
            None => {
                assert!(!banner.contains("spin"), "{flags}: {banner}");
                assert_eq!(hits, 0, "{flags}: {v}");
            }
        }
        assert!(
            idle_ms < 30.0,
            "{flags}: {idle_ms:.1} ms of CPU in 300 ms idle"
        );
    }
    // The control: a whole CPU on an idle box, at least a fifth of one on
    // a 2-core box busy with other tests.
    let (_, _, busy_ms) = echo_loaded_then_idle("--busy-poll", true);
    assert!(
        busy_ms > 60.0,
        "--busy-poll: {busy_ms:.1} ms in 300 ms idle"
    );
    util::assert_usage_errors(&[
        (&["echo", "--spin", "1001"], "1001 is not in 0..=1000"),
        (
            &["echo", "--spin", "50", "--busy-poll"],
            "'--spin <MICROS>' cannot be used with '--busy-poll'",
        ),
        (
            &["echo", "--spin", "50", "--backend", "mmsg"],
            "--spin watches an io_uring (the uring backend); --backend mmsg has --busy-poll",
        ),
    ]);
}

/// `udpring ARGS` with `input` written to its standard input (a pipe,
/// closed after): exit code, standard output, standard error.
fn run_fed(args: &[&str], input: &[u8]) -> (i32, String, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = util::udpring()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `-` is standard input wherever a file is read: payloads, DNS queries,
/// results to merge (`load --json | report -`).
#[test]
fn a_dash_reads_standard_input() {
    let echo = util::Server::echo();
    let to = echo.addr.to_string();
    let (code, doc, err) = run_fed(
        &[
            "load",
            &to,
            "--payload-file",
            "-",
            "--match",
            "flow",
            "-n",
            "3",
            "--json",
        ],
        b"000102030405060708090a0b0c0d0e0f\n",
    );
    assert_eq!(code, 0, "{err}");
    let v = util::json(&doc);
    assert_eq!(
        (v["sent"].as_u64(), v["received"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );
    let (code, out, err) = run_fed(&["report", "-"], doc.as_bytes());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("target {to}")), "{out}");
    let (code, doc, err) = run_fed(
        &["load", &to, "--dns-queries", "-", "-n", "2", "--json"],
        b"example.com A\n",
    );
    assert!(code == 0 || code == 1, "{err}");
    assert_eq!(util::json(&doc)["sent"].as_u64(), Some(2), "{doc}");
    // Nothing piped in: said of standard input, not of a file named `-`.
    let (code, _, err) = run_fed(&["report", "-"], b"");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("standard input (-): nothing came through"),
        "{err}"
    );
}
