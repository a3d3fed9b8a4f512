//! The adaptive spin (`Config::spin_us`): a worker answering a closed loop
//! takes the next request while it spins (counted), and an idle worker
//! sleeps after one window, as one without the spin does. Loopback only.

#[macro_use]
mod util;

use std::time::Duration;

use udpring::{Backend, Config, ConfigError, Engine};
use util::{Echo, Quiet, client, closed_loop, config, stop_clean, wait_workers};

/// Nanoseconds on a CPU so far of this process's thread named `name`
/// (/proc/self/task/*/schedstat), and its count of such threads.
fn thread_cpu_ns(name: &str) -> (u64, usize) {
    let mut total = (0, 0);
    for t in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        let ns: u64 = stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        total = (total.0 + ns, total.1 + 1);
    }
    total
}

/// The worker's CPU time over `over` with nothing to do, in ms.
fn idle_cpu_ms(over: Duration) -> f64 {
    let (a, n) = thread_cpu_ns("udpring-w0");
    assert_eq!(n, 1, "one worker thread");
    std::thread::sleep(over);
    let (b, _) = thread_cpu_ns("udpring-w0");
    (b - a) as f64 / 1e6
}

fn spinning(spin_us: u32, busy_poll: bool) -> Config {
    let mut cfg = config(Backend::Uring, false);
    cfg.spin_us = spin_us;
    cfg.busy_poll = busy_poll;
    cfg
}

#[test]
fn a_spinning_worker_takes_closed_loop_requests_while_spinning_and_sleeps_when_idle() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    // Without the spin: nothing counted.
    let engine = Engine::start(config(Backend::Uring, false), |_| Echo::new()).unwrap();
    closed_loop(&client(false), engine.local_addr(), 200);
    let s = wait_workers(&engine, |s| s[0].sent == 200)[0].clone();
    assert_eq!((s.spin_hits, s.spin_misses, s.spin_yields), (0, 0, 0));
    stop_clean(engine);

    // With it: requests come back within the window (1 ms), so they are
    // taken while spinning; the worker was not preempted all the time.
    let engine = Engine::start(spinning(1000, false), |_| Echo::new()).unwrap();
    let c = client(false);
    closed_loop(&c, engine.local_addr(), 2000);
    let s = wait_workers(&engine, |s| s[0].sent == 2000)[0].clone();
    assert!(
        s.spin_hits > 0,
        "no request taken while spinning: {} hits, {} misses, {} yields",
        s.spin_hits,
        s.spin_misses,
        s.spin_yields
    );
    // Idle: at most a window or two of spin, then asleep (a busy-polling
    // worker reads ~300 ms here: the check below can tell).
    std::thread::sleep(Duration::from_millis(100));
    let ms = idle_cpu_ms(Duration::from_millis(300));
    assert!(
        ms < 30.0,
        "an idle spinning worker used {ms:.1} ms of CPU in 300 ms"
    );
    let idle = engine.worker_stats()[0].clone();
    assert!(idle.spin_misses >= 1, "the last spin ended with nothing");
    // It still answers after sleeping.
    closed_loop(&c, engine.local_addr(), 10);
    let s = stop_clean(engine);
    assert_eq!((s.received, s.sent), (2010, 2010));

    // The measure itself: a busy-polling worker is never idle.
    let engine = Engine::start(spinning(0, true), |_| Echo::new()).unwrap();
    closed_loop(&c, engine.local_addr(), 10);
    let ms = idle_cpu_ms(Duration::from_millis(300));
    stop_clean(engine);
    assert!(
        ms > 100.0,
        "busy polling read {ms:.1} ms of 300 ms: the measure cannot tell"
    );
}

#[test]
fn a_sleeping_worker_has_published_what_it_counted_before_it_slept() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    // Nothing in flight after each datagram: the worker spins, finds
    // nothing, and sleeps with no timer to wake it.
    let engine = Engine::start(spinning(1000, false), |_| Quiet).unwrap();
    let (idle, end) = util::idle_then_stopped(engine);
    assert!(idle.spin_misses >= 1, "{idle:?}");
    let counts = |s: &udpring::Stats| {
        (
            s.received,
            s.spin_hits,
            s.spin_misses,
            s.spin_yields,
            s.waits,
        )
    };
    assert_eq!(
        counts(&idle),
        counts(&end),
        "(received, spin hits, misses, yields, waits) of the idle worker, then at its stop"
    );
}

#[test]
fn a_spin_is_refused_out_of_range_with_busy_poll_and_off_uring() {
    let invalid = |cfg: Config| match cfg.validate() {
        Err(ConfigError::Invalid { field, why }) => (field, why),
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        spinning(1001, false).validate(),
        Err(ConfigError::OutOfRange {
            field: "spin_us",
            ..
        })
    ));
    assert!(spinning(1000, false).validate().is_ok());
    let (field, why) = invalid(spinning(50, true));
    assert_eq!(field, "spin_us");
    assert!(why.contains("busy_poll"), "{why}");
    for b in [Backend::Mmsg, Backend::Simple] {
        let mut cfg = spinning(50, false);
        cfg.backend = Some(b);
        let (field, why) = invalid(cfg);
        assert_eq!(field, "spin_us");
        assert!(why.contains(b.name()), "{why}");
    }
}
