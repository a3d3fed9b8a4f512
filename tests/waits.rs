//! How often a worker enters the kernel, and what it leaves unreaped: in a
//! closed loop (one request at a time) the `uring` worker submits each
//! reply in the same `io_uring_enter` that waits for the next request (one
//! wait per request, not two), and a reply waited on that way is still
//! reaped, counted and its slot given back soon after the requests stop.
//! A worker waiting for datagrams is idle, not waiting for I/O. Loopback
//! only.

#[macro_use]
mod util;

use std::time::Duration;

use udpring::{Backend, Engine};
use util::{Echo, Quiet, client, closed_loop, config, stop_clean, wait_workers};

#[test]
fn a_closed_loop_costs_one_wait_per_request_on_uring() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    let engine = Engine::start(config(Backend::Uring, false), |_| Echo::new()).unwrap();
    let to = engine.local_addr();
    let c = client(false);
    // Warm up (the first request also arms what the loop arms once).
    closed_loop(&c, to, 10);
    let before = wait_workers(&engine, |s| s[0].sent == 10)[0].clone();
    const N: u64 = 2000;
    closed_loop(&c, to, N as usize);
    let after = wait_workers(&engine, |s| s[0].sent == 10 + N)[0].clone();
    let (waits, received) = (after.waits - before.waits, after.received - before.received);
    assert_eq!(received, N);
    // Two per request when the reply's completion wakes the worker on its
    // own; the timer that bounds an unreaped reply adds one per 50 ms.
    assert!(
        (waits as f64) < 1.5 * N as f64,
        "{waits} waits for {N} requests: the replies were not submitted with the wait"
    );
    assert!(waits >= N / 2, "{waits} waits for {N} requests");
    stop_clean(engine);
}

per_backend!(
    fn a_reply_is_counted_and_its_slot_back_soon_after_the_last_request(backend) {
        for v6 in [false, true] {
            let engine = Engine::start(config(backend, v6), |_| Echo::new()).unwrap();
            let c = client(v6);
            closed_loop(&c, engine.local_addr(), 3);
            // No more traffic: the last reply must still be reaped.
            let s = wait_workers(&engine, |s| s[0].sent == 3 && s[0].slots_out == 0)[0].clone();
            assert_eq!(
                (s.received, s.sent, s.slots_out),
                (3, 3, 0),
                "{backend:?} v6={v6}: the last reply is still unreaped"
            );
            // And the worker then sleeps: no wait ends without work.
            std::thread::sleep(Duration::from_millis(100));
            let idle = engine.worker_stats()[0].waits;
            std::thread::sleep(Duration::from_millis(300));
            let later = engine.worker_stats()[0].waits;
            assert!(
                later - idle <= 1,
                "{backend:?}: {} wake-ups in 300 ms idle",
                later - idle
            );
            stop_clean(engine);
        }
    }
);

per_backend!(
    fn an_idle_worker_has_published_what_it_counted_before_it_slept(backend) {
        let engine = Engine::start(config(backend, false), |_| Quiet).unwrap();
        let (idle, end) = util::idle_then_stopped(engine);
        assert_eq!(
            (idle.received, idle.waits),
            (end.received, end.waits),
            "{backend:?}: (received, waits) of the idle worker, then at its stop"
        );
    }
);

/// Tasks asleep waiting for I/O now, machine-wide (`procs_blocked` in
/// /proc/stat: the kernel's `nr_iowait()`, what `vmstat` shows as `b`).
/// While one is, the idle time of the CPU it slept on is charged as
/// `iowait`.
fn procs_blocked() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let line = stat
        .lines()
        .find(|l| l.starts_with("procs_blocked "))
        .expect("/proc/stat has procs_blocked");
    line[14..].trim().parse().unwrap()
}

/// The fewest tasks waiting for I/O seen over 20 looks a second apart by
/// 50 ms: a task asleep all along is in every look; others come and go.
fn fewest_blocked() -> u64 {
    (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            procs_blocked()
        })
        .min()
        .unwrap()
}

/// A worker asleep in its ring with a multishot receive armed was counted
/// as waiting for I/O: its CPU read 100% `iowait` in `top` while it had
/// nothing to do. Read from the kernel's count of tasks waiting for I/O,
/// before, while and after the idle worker sleeps: it must not add one.
/// (Read first from its CPU's `iowait` ticks, which needs that CPU idle:
/// with every CPU busy for 15 s, as a pinned loop on each made it, there
/// was nothing to tell.)
#[test]
fn an_idle_uring_worker_leaves_its_cpu_idle_not_in_iowait() {
    if !util::can_run(Backend::Uring) {
        return;
    }
    if !io_uring::IoUring::new(2).is_ok_and(|r| r.params().is_feature_no_iowait()) {
        eprintln!(
            "skipped: this kernel accounts every io_uring wait as iowait (6.15+ lets a ring opt out)"
        );
        return;
    }
    let before = fewest_blocked();
    let engine = Engine::start(config(Backend::Uring, false), |_| Echo::new()).unwrap();
    // One round trip: the worker is in its loop, then idle.
    closed_loop(&client(false), engine.local_addr(), 1);
    let idle = fewest_blocked();
    stop_clean(engine);
    let after = fewest_blocked();
    assert!(
        idle <= before.max(after),
        "an idle worker is counted as waiting for I/O: at least {idle} tasks blocked on I/O \
         while it slept, {before} before and {after} after"
    );
}
