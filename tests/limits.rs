//! The engine under the process's limits: a start that cannot have all its
//! workers says which limit, and gives back what it had. Each test runs
//! itself again as a child held to the limit, so the rest of the suite
//! keeps its own.

mod util;

use std::process::Command;
use std::time::Duration;

use udpring::{Backend, Engine};
use util::{Echo, config};

const CHILD: &str = "UDPRING_LIMITS_CHILD";

/// Threads of this process.
fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Open files of this process.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// In the child (`CHILD` set) runs `body`; else runs test `name` of this
/// binary again as that child (as nobody when `as_nobody`), and checks
/// that it passed.
fn in_a_child(name: &str, as_nobody: bool, body: fn()) {
    if std::env::var_os(CHILD).is_some() {
        return body();
    }
    let exe = std::env::current_exe().unwrap();
    let args = ["--exact", name, "--nocapture", "--test-threads=1"];
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd.args(args).env(CHILD, "1").output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("child passed"),
        "{:?}\n{stdout}\n{stderr}",
        out.status
    );
}

/// In the child: finds the limit on threads that lets exactly one more
/// start, then starts an engine of two workers under it.
fn start_with_room_for_one_worker() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    // The probe's thread now, not within the start (and gone before the
    // count below).
    let _ = udpring::uring_support();
    std::thread::sleep(Duration::from_millis(50));
    let hard = getrlimit(Resource::RLIMIT_NPROC).unwrap().1;
    let mut limit = 1;
    loop {
        setrlimit(Resource::RLIMIT_NPROC, limit, hard).unwrap();
        if let Ok(t) = std::thread::Builder::new().spawn(|| {}) {
            t.join().unwrap();
            // Joined is not yet released: let the count come back down.
            std::thread::sleep(Duration::from_millis(50));
            break;
        }
        limit += 1;
        assert!(limit < 1 << 16, "no limit lets a thread start");
    }
    // Worker 0 starts; it is stopped and joined, not left running on its
    // socket, when worker 1 cannot.
    refused_and_given_back(2, &["worker 1: no thread could be started", "`ulimit -u`"]);
}

/// In the child: an mmsg engine of `workers` does not start, says each of
/// `says`, and leaves no thread of its own behind.
fn refused_and_given_back(workers: usize, says: &[&str]) {
    let before = threads();
    let mut cfg = config(Backend::Mmsg, false);
    cfg.workers = workers;
    let e = Engine::start(cfg, |_| Echo::new())
        .map(|_| ())
        .expect_err("a start over the limit");
    for s in says {
        assert!(e.to_string().contains(s), "'{s}' not in: {e}");
    }
    assert_eq!(threads(), before, "a worker of the failed start still runs");
    println!("child passed");
}

#[test]
fn a_start_short_of_threads_stops_the_workers_it_started() {
    // RLIMIT_NPROC counts the user's every process and thread: only as a
    // user of its own (nobody, from root) is the count this child's.
    if std::env::var_os(CHILD).is_none() && !nix::unistd::geteuid().is_root() {
        assert!(
            std::env::var_os("UDPRING_REQUIRE_NETNS").is_none_or(|v| v != "1"),
            "UDPRING_REQUIRE_NETNS=1 but not root"
        );
        eprintln!("skipped: needs root, to run its child as nobody (RLIMIT_NPROC is per user)");
        return;
    }
    in_a_child(
        "a_start_short_of_threads_stops_the_workers_it_started",
        true,
        start_with_room_for_one_worker,
    );
}

/// In the child: starts an engine of two workers under every limit on
/// open files too low for it, then under the first that is not.
fn start_short_of_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let _ = udpring::uring_support();
    std::thread::sleep(Duration::from_millis(50));
    let hard = getrlimit(Resource::RLIMIT_NOFILE).unwrap().1;
    let (files, tasks) = (open_files(), threads());
    let mut failed = 0;
    for limit in files as u64.. {
        assert!(limit < files as u64 + 64, "no limit lets two workers start");
        setrlimit(Resource::RLIMIT_NOFILE, limit, hard).unwrap();
        let mut cfg = config(Backend::Uring, false);
        cfg.workers = 2;
        match Engine::start(cfg, |_| Echo::new()) {
            Ok(engine) => {
                engine.stop().unwrap();
                break;
            }
            Err(e) => {
                failed += 1;
                assert!(
                    e.to_string().contains("Too many open files")
                        && e.to_string().contains("`ulimit -n`"),
                    "under {limit} open files: {e}"
                );
                // Rings and sockets go asynchronously: a moment.
                std::thread::sleep(Duration::from_millis(20));
                assert_eq!(
                    (open_files(), threads()),
                    (files, tasks),
                    "a start that failed under {limit} open files kept what it had: {e}"
                );
            }
        }
    }
    assert!(failed >= 3, "only {failed} limits were too low");
    println!("child passed: {failed} limits too low, each said and given back");
}

#[test]
fn a_start_short_of_open_files_says_so_and_gives_back_what_it_had() {
    // RLIMIT_NOFILE is the process's own (and holds root).
    in_a_child(
        "a_start_short_of_open_files_says_so_and_gives_back_what_it_had",
        false,
        start_short_of_open_files,
    );
}

/// In the child: an engine whose buffers do not fit the address space
/// left says so.
fn start_short_of_address_space() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let _ = udpring::uring_support();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let hard = getrlimit(Resource::RLIMIT_AS).unwrap().1;
    // Room for a worker's thread and its small allocations, not for its
    // 1,280 slots of 4 KiB.
    setrlimit(Resource::RLIMIT_AS, (vm_kib + 4096) * 1024, hard).unwrap();
    refused_and_given_back(
        1,
        &[
            "worker 0: the worker's 1280 buffer slots (5440 KiB) could not be mapped",
            "`ulimit -v`",
        ],
    );
}

#[test]
fn a_start_short_of_address_space_says_what_did_not_fit() {
    in_a_child(
        "a_start_short_of_address_space_says_what_did_not_fit",
        false,
        start_short_of_address_space,
    );
}
