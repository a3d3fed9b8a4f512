//! A first run that tells the truth. The quick start loses
//! nothing on loopback; a run that measured nothing exits 1; figures with
//! no data are null, not 0.0; the `.hgrm` TotalCount is a running total;
//! the warm-up is kept out of every count; live lines leave the warm-up
//! out of their clock and say which figures are totals; sends the kernel
//! refused are not reported as sent (flags that would mean nothing:
//! `cli_flags.rs`); the README's figures are PERF.md's. All on loopback.

mod util;

use std::net::UdpSocket;

use util::{Server, json, run, words};

#[test]
fn the_quick_start_loses_nothing_on_loopback() {
    let echo = Server::echo();
    // What the README says to run: a flood with the default window.
    let (code, out, err) = run(&["load", &echo.addr.to_string(), "-t", "1", "--json", "-q"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    assert!(v["sent"].as_u64().unwrap() > 1000, "{v}");
    assert_eq!(
        v["lost"], 0,
        "a bounded window on loopback loses nothing: {v}"
    );
    assert_eq!(v["received"], v["sent"]);
    assert!(!err.contains("hint"), "no loss, no hint: {err}");
}

#[test]
fn window_options_belong_to_a_flood() {
    for (args, said) in [
        (
            &["--mode", "ping", "--window", "8"][..],
            "--window cannot be combined with --mode ping",
        ),
        (
            &["--rate", "100", "--window", "8"],
            "--window cannot be combined with --rate",
        ),
        (
            &["--mode", "ping", "--unbounded"],
            "--unbounded cannot be combined with --mode ping",
        ),
    ] {
        let (code, _, err) = run(&[&["load", "127.0.0.1:9"][..], args].concat());
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(
            err.contains(said) && err.contains("shapes a flood"),
            "{args:?}: {err}"
        );
    }
    let (code, _, err) = run(&["load", "127.0.0.1:9", "--window", "0"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["load", "127.0.0.1:9", "--window", "8", "--unbounded"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn a_run_with_no_replies_exits_1_and_has_no_rtt() {
    let closed = util::unused_addr("127.0.0.1").to_string();
    // A flood at a dead port.
    let (code, out, err) = run(&[
        "load", &closed, "-t", "0.3", "--warmup", "0", "--drain", "0.1", "--json", "-q",
    ]);
    assert_eq!(code, 1, "{err}");
    let v = json(&out);
    assert!(v["rtt_us"].is_null(), "{v}");
    assert!(err.contains("no replies"), "{err}");
    // The error says why; no loss hint beside it (it once told a run
    // with nothing back to pace "below 0/s (what came back)").
    assert_eq!(v["warnings"], serde_json::json!([]), "{v}");
    // Ping mode whose one request outlives the run (a target that takes
    // it and never answers; a closed port's ICMP error would end it):
    // nothing measured.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let quiet = silent.local_addr().unwrap().to_string();
    let (code, out, err) = run(&["load", &quiet, "--mode", "ping", "-t", "0.3", "-q"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("nothing measured"), "{err}");
    assert!(
        out.contains("lost 0 (-)"),
        "no percentage of nothing: {out}"
    );
    assert!(out.contains("rtt us  - (no replies)"), "{out}");
    // A rate that puts no datagram in the measured span: said so, not
    // blamed on the host ("the schedule ran late").
    let (code, out, err) = run(&["load", &closed, "--rate", "1", "-t", "0.3", "--json"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("none was due in the 0.300 s measured"),
        "{err}"
    );
    let v = json(&out);
    assert_eq!(v["saturated"], false, "{v}");
    assert!(!err.contains("asked for"), "{err}");
    // The same one-way, after a warm-up that took the one datagram due.
    let (code, _, err) = run(&[
        "load", &closed, "--match", "none", "--rate", "1", "--warmup", "0.5", "-t", "0.2",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("none was in the 0.200 s measured"), "{err}");
}

#[test]
fn the_hgrm_total_count_is_a_running_total() {
    let echo = Server::echo();
    let dir = std::env::temp_dir().join(format!("udpring-truth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hgrm = dir.join("rtt.hgrm");
    let (code, _, err) = run(&[
        "load",
        &echo.addr.to_string(),
        "--mode",
        "ping",
        "--count",
        "300",
        "-q",
        "--hist-out",
        hgrm.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&hgrm).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    // Rows: Value Percentile TotalCount 1/(1-Percentile).
    let totals: Vec<u64> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains("Percentile"))
        .filter_map(|l| l.split_whitespace().nth(2)?.parse().ok())
        .collect();
    assert!(totals.len() > 5, "{text}");
    assert!(
        totals.windows(2).all(|w| w[0] <= w[1]),
        "TotalCount never decreases: {totals:?}"
    );
    assert_eq!(*totals.last().unwrap(), 300, "the last row counts them all");
    assert!(text.contains("Total count = 300"), "{text}");
}

#[test]
fn the_warm_up_is_kept_out_of_every_count() {
    // A responder that answers every datagram with junk: nothing it sends
    // is a valid reply. Junk answering warm-up datagrams must not be
    // counted as invalid while the warm-up's sends are not counted as sent.
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = junk.local_addr().unwrap();
    junk.set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let responder = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = junk.recv_from(&mut buf) {
            let _ = junk.send_to(b"not an echo", from);
        }
    });
    let (code, out, err) = run(&util::words(&format!(
        "load {} --rate 2000 -t 0.5 --warmup 0.3 --json -q",
        to
    )));
    responder.join().unwrap();
    assert_eq!(code, 1, "nothing valid came back: {err}");
    let v = json(&out);
    let (sent, invalid) = (v["sent"].as_u64().unwrap(), v["invalid"].as_u64().unwrap());
    assert_eq!(sent, 1000, "the schedule: 2000/s for 0.5 s");
    assert!(
        invalid.abs_diff(sent) <= 50,
        "one junk answer per measured datagram (those in flight at the end of the \
         warm-up cannot be told apart; at 2000/s a busy host has a few dozen): {v}"
    );
    assert!(
        v["warmup_replies"].as_u64().unwrap() >= 500,
        "the warm-up's answers are counted as such: {v}"
    );
    // Likewise the kernel's errors: a closed port answers each datagram
    // with port unreachable; those about the warm-up are not counted.
    let closed = util::unused_addr("127.0.0.1");
    let (_, out, _) = run(&util::words(&format!(
        "load {closed} --rate 2000 -t 0.5 --warmup 0.3 --json -q"
    )));
    let v = json(&out);
    let refused = v["errors"]["ECONNREFUSED"].as_u64().unwrap_or(0);
    assert_eq!(v["sent"], 1000, "{v}");
    assert!(
        refused.abs_diff(1000) <= 50,
        "one error per measured datagram, not the warm-up's 600 too: {v}"
    );
}

#[test]
fn live_lines_leave_the_warm_up_out_of_the_clock_and_label_totals() {
    let echo = Server::echo();
    let (code, _, err) = run(&util::words(&format!(
        "load {} --rate 5000 -t 1 --warmup 0.5 -i 0.25",
        echo.addr
    )));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("sent/s")).collect();
    assert!(lines.len() >= 3, "{err}");
    for l in &lines {
        assert!(l.contains("recv/s") && l.contains("| total sent"), "{l}");
    }
    let first: f64 = lines[0]
        .split_whitespace()
        .next()
        .and_then(|t| t.trim_end_matches('s').parse().ok())
        .unwrap_or_else(|| panic!("a time first: {}", lines[0]));
    assert!(
        (0.2..0.5).contains(&first),
        "the first line comes one interval after the warm-up, not 0.5 s + 0.25: {}",
        lines[0]
    );
    // At 5000/s the first quarter second sends about 1250: the rate of the
    // first line is not diluted by the warm-up.
    let rate: f64 = lines[0]
        .split("sent/s")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse().ok())
        .unwrap();
    assert!(rate > 3000.0, "{}", lines[0]);
}

#[test]
fn a_paced_run_that_falls_behind_says_so_and_keeps_its_schedule() {
    let echo = Server::echo();
    // Far more than one worker sends here: the schedule runs late.
    let (code, out, err) = run(&util::words(&format!(
        "load {} --rate 2000000 -t 0.05 --warmup 0 --json -q",
        echo.addr
    )));
    assert_eq!(code, 0, "{err}");
    let v = json(&out);
    // Every datagram of the schedule is accounted for, late or not: sent,
    // or (on a host so busy that the run is a second past its end, as a
    // 2-core CI box running other tests can be) counted as never sent.
    let (sent, unsent) = (v["sent"].as_u64().unwrap(), v["unsent"].as_u64().unwrap());
    assert_eq!(sent + unsent, 100_000, "{v}");
    if unsent > 0 {
        assert!(
            v["warnings"].to_string().contains(&format!(
                "{unsent} datagrams due before the end were never sent"
            )),
            "{v}"
        );
    }
    assert!(
        v["duration_s"].as_f64().unwrap() > 0.05,
        "the span is what it took: {v}"
    );
    assert!(err.is_empty(), "-q says only errors: {err}");
    assert!(
        v["warnings"].to_string().contains("but this host sent"),
        "{v}"
    );
}

/// Replies cut by the server's buffer are named: counted as cut in the
/// text (and `stale` beside them), and the error says why nothing was
/// received instead of asking whether an echo listens.
#[test]
fn cut_replies_are_named_in_the_text_and_the_error() {
    let echo = Server::echo();
    let (code, out, err) = run(&util::words(&format!(
        "load {} --size 5000 -n 200 --rate 2000 --warmup 0 --drain 0.3",
        echo.addr
    )));
    assert_eq!(code, 1, "{out} {err}");
    assert!(out.contains("cut 200"), "{out}");
    assert!(out.contains("stale 0"), "{out}");
    assert!(err.contains("200 came back cut"), "{err}");
    assert!(err.contains("--slot-size"), "{err}");
}

/// With GRO, the kernel drops (and counts) a train at once: the text says
/// the unit, on the echo's totals and on the load's line.
#[test]
fn kernel_drops_say_when_they_count_gro_trains() {
    let (code, out, err) = run(&util::words(
        "echo --bind 127.0.0.1:0 --gro -w 1 -q --duration 0.3",
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kernel-drops 0 (GRO trains)"), "{out}");
    let echo = Server::echo();
    let (code, out, err) = run(&util::words(&format!(
        "load {} --gso 4 -n 400 --warmup 0",
        echo.addr
    )));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kernel drops 0 (GRO trains)"), "{out}");
}

/// The CPUs thread `tid` may run on (`None` once it is gone).
fn allowed(tid: i32) -> Option<Vec<usize>> {
    use nix::sched::{CpuSet, sched_getaffinity};
    let set = sched_getaffinity(nix::unistd::Pid::from_raw(tid)).ok()?;
    Some(
        (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
    )
}

#[test]
fn load_pins_its_workers_as_its_help_says() {
    let mine = udpring::os::allowed_cpus();
    if mine.len() < 2 {
        eprintln!("skipping: one CPU allowed ({mine:?}), pinned and unpinned look alike");
        return;
    }
    let echo = Server::echo();
    let target = echo.addr.to_string();
    for (extra, want) in [
        // The last CPUs by default, leaving the first to a server.
        (&[][..], vec![*mine.last().unwrap()]),
        (&["--cpu", "0"], vec![mine[0]]),
        (&["--no-pin"], mine.clone()),
    ] {
        let mut args = vec!["load", &target, "-t", "5", "-q", "--mode", "ping"];
        args.extend_from_slice(extra);
        let mut child = util::udpring()
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The worker's thread, once it runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut seen = None;
        while seen.is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", child.id())) else {
                continue;
            };
            seen = tasks.filter_map(|t| t.ok()).find_map(|t| {
                let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
                let tid = t.file_name().to_str()?.parse().ok()?;
                if comm.trim() == "udpring-w0" {
                    allowed(tid)
                } else {
                    None
                }
            });
        }
        util::signal(&child, nix::sys::signal::Signal::SIGINT);
        let _ = util::wait_at_most(&mut child, std::time::Duration::from_secs(5), "load");
        assert_eq!(seen, Some(want), "load {extra:?}: its worker's CPUs");
    }
}

/// Whether the kernel refuses every send to an IPv6 group on `lo` here
/// (ENETUNREACH: `lo` has no MULTICAST flag, so no route for a group on
/// it). Where it has one there is nothing to show, and the tests that need
/// the refusal say so and skip.
fn lo_refuses_v6_groups() -> bool {
    let probe = UdpSocket::bind("[::1]:0").unwrap();
    socket2::SockRef::from(&probe)
        .set_multicast_if_v6(1)
        .unwrap();
    let to = std::net::SocketAddrV6::new("ff12::1".parse().unwrap(), 9, 0, 1);
    let refused =
        probe.send_to(b"x", to).map_err(|e| e.raw_os_error()) == Err(Some(libc::ENETUNREACH));
    if !refused {
        eprintln!("skipped: lo routes IPv6 multicast on this host");
    }
    refused
}

#[test]
fn a_multicast_send_that_cannot_go_out_fails_and_says_why() {
    if !lo_refuses_v6_groups() {
        return;
    }
    let (code, out, err) = run(&words("mcast send [ff12::1]:9 --iface lo -c 3 --rate 100"));
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("sent 0 (failed ENETUNREACH=3)"), "{out}");
    assert!(
        err.contains("nothing went out to [ff12::1]:9: every send failed")
            && err.contains("choose another --iface"),
        "{err}"
    );
    let (code, out, _) = run(&words(
        "mcast send [ff12::1]:9 --iface lo -c 3 --rate 100 --json",
    ));
    assert_eq!(code, 1);
    let doc = json(&out);
    assert_eq!(doc["send_errors"]["ENETUNREACH"], 3, "{doc}");
    // A group that goes out says nothing of the kind.
    let (code, out, err) = run(&words(
        "mcast send 239.255.0.9:9 --iface lo -c 3 --rate 100",
    ));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": sent 3"), "{out}");
    assert!(!out.contains("received"), "a sender hears nothing: {out}");
}

#[test]
fn a_load_whose_every_send_is_refused_fails_and_says_so() {
    if !lo_refuses_v6_groups() {
        return;
    }
    // One-way, where nothing is expected back, and a request/response run.
    for extra in ["--match none", "--timeout 0.1"] {
        let (code, out, err) = run(&words(&format!(
            "load [ff12::1%lo]:9 -n 5 --rate 100 {extra} --json"
        )));
        assert_eq!(code, 1, "{extra}: {out}");
        let doc = json(&out);
        assert_eq!(
            (doc["sent_bufs"].as_u64(), doc["sent"].as_u64()),
            (Some(0), Some(5)),
            "{doc}"
        );
        assert!(
            err.contains(
                "nothing went out to [ff12::1%1]:9: the kernel refused every send (ENETUNREACH="
            ),
            "{extra}: {err}"
        );
    }
}

/// The rows of the first table under `heading` in `text`: cells trimmed.
fn table_under(text: &str, heading: &str) -> Vec<Vec<String>> {
    let at = text
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    text[at..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header and its rule
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect()
}

/// The README's "Where it stands" is a few rows of the table PERF.md
/// opens with, as they are there: the same run (its commit named), the
/// same anchors and ratios. Copied by hand, they once drifted apart (a
/// row read 0.87x in the README and 1.30x in PERF.md).
#[test]
fn the_readme_figures_are_perf_md_s_standing_run() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let perf = std::fs::read_to_string(root.join("PERF.md")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // | what | udpring | anchor | anchor's figure | udpring / anchor | unit |
    let standing: std::collections::HashMap<String, (String, String)> =
        table_under(&perf, "## Where udpring stands")
            .into_iter()
            .map(|r| (r[0].clone(), (r[2].clone(), r[4].clone())))
            .collect();
    let commit = perf
        .split_whitespace()
        .skip_while(|w| *w != "commit")
        .nth(1)
        .expect("PERF.md names the commit of its run")
        .trim_end_matches(',');
    assert!(
        readme.contains(&format!("commit {commit}")),
        "the README names the run's commit, {commit}"
    );
    // | what | udpring / anchor | anchor |
    let rows = table_under(&readme, "## Where it stands");
    assert!(rows.len() >= 8, "{rows:?}");
    for r in &rows {
        let Some((anchor, ratio)) = standing.get(&r[0]) else {
            panic!("README row {:?} is not a row of PERF.md's table", r[0]);
        };
        assert_eq!(
            (&r[1], &r[2]),
            (ratio, anchor),
            "README row {:?} against PERF.md's",
            r[0]
        );
    }
}
