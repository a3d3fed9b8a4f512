//! The async stream (`Engine::start_stream`) allocates nothing per
//! datagram once warm: its buffers come from a bounded pool and go back to
//! it when a `Received` is dropped. A counting allocator watches the whole
//! process (the engine's worker, the consumer's thread and runtime, the
//! client) while thousands of requests go through.
//!
//! One test in this binary, so nothing else allocates meanwhile.

mod util;

use std::net::UdpSocket;
use std::time::Duration;

use udpring::{Config, Engine};
use util::counting;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

#[test]
fn no_allocation_per_datagram_through_the_stream() {
    let mut cfg = Config::new("127.0.0.1:0".parse().unwrap());
    cfg.workers = 1;
    // The stream makes its buffers as the queue first grows, up to
    // `DEPTH`. A round has 32 in flight (and the consumer may still hold
    // one answered): all `DEPTH` are made first, so that a measured round
    // that finds the consumer further behind than the warm-up ever did
    // (a busy host) still finds them made.
    const DEPTH: usize = 64;
    let (engine, mut incoming) = Engine::start_stream(cfg, DEPTH).unwrap();
    let to = engine.local_addr();
    let mut inc = incoming.pop().unwrap();
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let consumer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        wait.recv().unwrap();
        rt.block_on(async move {
            let mut out = [0u8; 64];
            while let Some(d) = inc.recv().await {
                let n = d.payload().len();
                out[..n].copy_from_slice(d.payload());
                out[..n].make_ascii_uppercase();
                let _ = inc.reply(&d, &out[..n]);
            }
            inc.dropped()
        })
    });
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    // Every buffer made: DEPTH requests queued while the consumer waits.
    let msg = [b'q'; 48];
    for _ in 0..DEPTH {
        c.send_to(&msg, to).unwrap();
    }
    util::wait_workers(&engine, |s| s[0].received == DEPTH as u64);
    go.send(()).unwrap();
    for _ in 0..DEPTH {
        c.recv_from(&mut buf).expect("every request answered");
    }
    util::upper_rounds(&c, to, 300, &mut buf); // warm up: wakers, the runtime
    let before = counting::total();
    util::upper_rounds(&c, to, 500, &mut buf);
    let after = counting::total();
    let s = engine.stop().unwrap();
    let incoming_dropped = consumer.join().unwrap();
    let n = 500 * 32;
    eprintln!("{} allocations over {n} datagrams", after - before);
    assert_eq!(s.received, 800 * 32 + DEPTH as u64);
    assert_eq!(incoming_dropped, 0, "no datagram found the queue full");
    assert!(
        after - before <= 2,
        "{} allocations over {n} datagrams",
        after - before
    );
}
