//! How often a worker enters the kernel, and what it leaves unreaped: in a
//! closed loop (one request at a time) the `uring` worker submits each
//! reply in the same `io_uring_enter` that waits for the next request (one
//! wait per request, not two), and a reply waited on that way is still
//! reaped, counted and its slot given back soon after the requests stop.
//! Loopback only.

#[macro_use]
mod util;

use std::time::Duration;

use udpring::{Backend, Engine};
use util::{Echo, client, config, stop_clean, wait_workers};

/// Round trips, one request in flight.
fn closed_loop(c: &std::net::UdpSocket, to: std::net::SocketAddr, n: usize) {
    let mut buf = [0u8; 64];
    for i in 0..n as u32 {
        c.send_to(&i.to_be_bytes(), to).unwrap();
        let (k, _) = c.recv_from(&mut buf).expect("every request answered");
        assert_eq!(&buf[..k], &i.to_be_bytes());
    }
}

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
