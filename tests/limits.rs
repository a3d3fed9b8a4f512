//! The engine under the process's limits: a start that cannot have all its
//! workers gives back what it had. Runs itself again as a child held to a
//! limit on threads (as nobody when root, whom `RLIMIT_NPROC` does not
//! hold), so the rest of the suite keeps its own.

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
    let before = threads();
    let mut cfg = config(Backend::Mmsg, false);
    cfg.workers = 2;
    let e = Engine::start(cfg, |_| Echo::new())
        .map(|_| ())
        .expect_err("the second worker's thread is over the limit");
    assert!(
        e.to_string()
            .contains("worker 1: no thread could be started"),
        "{e}"
    );
    assert!(e.to_string().contains("`ulimit -u`"), "{e}");
    // Worker 0 was stopped and joined, not left running on its socket.
    assert_eq!(threads(), before, "a worker of the failed start still runs");
    println!("child passed");
}

#[test]
fn a_start_short_of_threads_stops_the_workers_it_started() {
    if std::env::var_os(CHILD).is_some() {
        return start_with_room_for_one_worker();
    }
    let exe = std::env::current_exe().unwrap();
    let args = [
        "--exact",
        "a_start_short_of_threads_stops_the_workers_it_started",
        "--nocapture",
        "--test-threads=1",
    ];
    let mut cmd = if nix::unistd::geteuid().is_root() {
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
