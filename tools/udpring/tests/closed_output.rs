//! The command when its reader goes away (`udpring load ... | head -1`):
//! every subcommand ends within a second of its run's end, or sooner,
//! without a panic and without being killed, whether standard output or
//! standard error was closed; and a SIGTERM ends a run in any phase. A
//! full disk under standard output is not a reader gone: it fails the
//! command.

mod util;

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use util::{Server, udpring};

/// Which stream's reader is gone before the command writes anything.
#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
}

/// Runs `udpring ARGS` with one stream's pipe closed at its reading end
/// (the other read to its end), and returns how long it took, its exit
/// status and what the open stream said. Killed after `limit`.
fn run_closed(args: &[&str], closed: Closed, limit: Duration) -> (Duration, Option<i32>, String) {
    let start = Instant::now();
    let mut child: Child = udpring()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away at once: writes fail with EPIPE.
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let mut open: Box<dyn std::io::Read + Send> = match closed {
        Closed::Stdout => {
            drop(out);
            Box::new(err)
        }
        Closed::Stderr => {
            drop(err);
            Box::new(out)
        }
    };
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = open.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} with {closed:?} closed still ran after {limit:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = start.elapsed();
    (took, status.code(), reader.join().unwrap())
}

/// `args`, whose run lasts `run`, ends within a second of that with either
/// stream closed, exits by itself (not by a signal) and says nothing of a
/// panic.
fn ends_promptly(args: &[&str], run: Duration) {
    for closed in [Closed::Stdout, Closed::Stderr] {
        let (took, code, said) = run_closed(args, closed, run + Duration::from_secs(5));
        eprintln!("{args:?} {closed:?} closed: {took:?} exit {code:?}");
        assert!(
            took <= run + Duration::from_secs(1),
            "{args:?} with {closed:?} closed took {took:?} (its run: {run:?})"
        );
        assert!(code.is_some(), "{args:?} {closed:?}: ended by a signal");
        assert!(!said.contains("panicked"), "{args:?} {closed:?}: {said}");
    }
}

#[test]
fn servers_end_when_their_output_closes() {
    let two = Duration::from_secs(2);
    for args in [
        &[
            "echo",
            "--bind",
            "127.0.0.1:0",
            "-w",
            "1",
            "--duration",
            "2",
        ][..],
        &["sink", "--bind", "127.0.0.1:0", "--duration", "2"],
        &[
            "fanout",
            "--listen",
            "127.0.0.1:0",
            "--to",
            "127.0.0.1:9",
            "-w",
            "1",
            "--duration",
            "2",
        ],
        &[
            "mcast",
            "listen",
            "239.1.1.1:5900",
            "--iface",
            "lo",
            "--duration",
            "2",
        ],
    ] {
        ends_promptly(args, two);
    }
}

#[test]
fn load_and_report_end_when_their_output_closes() {
    let echo = Server::start(&util::words(
        "echo --bind 127.0.0.1:0 -w 1 -q --json --duration 30",
    ));
    let target = echo.addr.to_string();
    ends_promptly(
        &["load", &target, "--rate", "2k", "-t", "2", "--warmup", "0"],
        Duration::from_secs(2),
    );
    ends_promptly(
        &[
            "load", &target, "--rate", "2k", "-t", "2", "--warmup", "0", "--json",
        ],
        Duration::from_secs(2),
    );
    // A result to merge, then report with each stream closed.
    let (code, out, err) =
        util::run(&["load", &target, "-n", "200", "--rate", "2k", "--json", "-q"]);
    assert_eq!(code, 0, "{err}");
    let path = std::env::temp_dir().join(format!("udpring-closed-{}.json", std::process::id()));
    std::fs::File::create(&path)
        .unwrap()
        .write_all(out.as_bytes())
        .unwrap();
    let p = path.to_string_lossy().into_owned();
    ends_promptly(&["report", &p, &p], Duration::ZERO);
    let _ = std::fs::remove_file(&path);
}

/// Standard output on a full disk (`/dev/full`: every write ENOSPC) is
/// not a reader gone: the result is lost, so it is said, once, and the
/// command exits 1 instead of 0 with half a document.
#[test]
fn a_full_disk_under_standard_output_fails_the_command() {
    let echo = Server::start(&util::words(
        "echo --bind 127.0.0.1:0 -w 1 -q --json --duration 30",
    ));
    let target = echo.addr.to_string();
    for args in [
        vec!["load", &target, "-n", "100", "--json", "-q"],
        vec!["load", &target, "-n", "100", "-q"],
        vec!["man"],
    ] {
        let out = udpring()
            .args(&args)
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(
            err.matches("udpring: error: standard output: No space left on device")
                .count(),
            1,
            "{args:?}: {err}"
        );
    }
}

/// SIGTERM while `load --start-at` waits for its start, and during the
/// run: each ends at once with its totals.
#[test]
fn a_signal_ends_load_in_every_phase() {
    let echo = Server::start(&util::words(
        "echo --bind 127.0.0.1:0 -w 1 -q --json --duration 30",
    ));
    let target = echo.addr.to_string();
    let later = (std::time::SystemTime::now() + Duration::from_secs(20))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string();
    for args in [
        vec!["load", &target, "-t", "20", "--start-at", &later, "-q"],
        vec!["load", &target, "-t", "20", "--rate", "1k", "-q"],
    ] {
        let mut child = udpring()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700));
        let sent = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                panic!("{args:?}: SIGTERM did not end it");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let took = sent.elapsed();
        let out = child.wait_with_output().unwrap();
        assert!(
            took < Duration::from_secs(1),
            "{args:?}: {took:?} after SIGTERM"
        );
        assert!(
            out.status.code().is_some(),
            "{args:?}: ended by the signal itself, without totals"
        );
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}

/// Context switches a process's threads made by sleeping, all together.
fn sleeps(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

#[test]
fn an_idle_quiet_server_sleeps_until_a_signal_comes() {
    for args in [
        "echo --bind 127.0.0.1:0 -w 1 -q --duration 30",
        "sink --bind 127.0.0.1:0 -q --duration 30",
        // Its sweep of expired subscribers runs only while there are any
        // (it woke once a second for ever).
        "fanout --listen 127.0.0.1:0 --to 127.0.0.1:9 -w 1 -q --duration 30",
    ] {
        let mut s = Server::start(&util::words(args));
        // The banner can come before a worker's first sleep (its first
        // wait, on a loaded machine some ms later): that is start-up,
        // not idle. Counted from 300 ms on.
        std::thread::sleep(Duration::from_millis(300));
        let before = sleeps(s.child.id());
        std::thread::sleep(Duration::from_millis(2500));
        let woke = sleeps(s.child.id()) - before;
        // With nothing to print, nothing arriving and no end due, no
        // thread has a reason to wake (a loop looking at a flag every
        // 10 ms woke ~250 times here).
        assert!(woke <= 1, "{args}: {woke} wake-ups in 2.5 s idle");
        util::signal(&s.child, nix::sys::signal::Signal::SIGINT);
        let (status, _) = util::wait_at_most(&mut s.child, Duration::from_secs(5), args);
        assert_eq!(status.code(), Some(0), "{args}");
    }
}
