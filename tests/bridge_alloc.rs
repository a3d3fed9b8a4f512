//! The tokio bridge of `examples/tokio_bridge.rs` allocates nothing per
//! message in steady state (at most a channel block now and then): a counting allocator watches the whole process
//! (the engine's worker, the tokio runtime, the client) while thousands of
//! requests go through the channel, the async side and a Sender.
//!
//! One test in this binary, so nothing else allocates meanwhile.

#[path = "../examples/tokio_bridge.rs"]
#[allow(dead_code)]
mod bridge;

mod util;

use std::net::UdpSocket;
use std::sync::atomic::Ordering;
use std::time::Duration;

use util::counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn no_allocation_per_message_through_the_bridge() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let b = bridge::start("127.0.0.1:0".parse().unwrap(), 1, 256).unwrap();
    let to = b.engine.local_addr();
    let counts = b.counts.clone();
    let server = rt.spawn(bridge::serve(b.requests, b.senders, b.pool, counts.clone()));
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    util::upper_rounds(&c, to, 300, &mut buf); // warm up: buffers, blocks, wakers
    let before = counting::total();
    util::upper_rounds(&c, to, 500, &mut buf);
    let after = counting::total();
    let s = b.engine.stop().unwrap();
    rt.block_on(server).unwrap();
    let n = 500 * 32;
    let per = (after - before) as f64 / n as f64;
    eprintln!(
        "{} allocations over {n} messages ({per:.4} per message)",
        after - before
    );
    assert_eq!(counts.answered.load(Ordering::Relaxed), 800 * 32);
    assert_eq!(counts.dropped_full.load(Ordering::Relaxed), 0);
    assert_eq!(s.sent, 800 * 32);
    // tokio's mpsc recycles its 32-slot blocks but frees one when a reuse
    // race is lost, so a descheduled side can cost a block now and then
    // (seen once, 1 in 16,000 messages, on a loaded host). Anything per
    // message would be thousands here.
    assert!(after - before <= 2, "{per} allocations per message");
}
