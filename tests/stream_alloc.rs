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
    let (engine, mut incoming) = Engine::start_stream(cfg, 256).unwrap();
    let to = engine.local_addr();
    let mut inc = incoming.pop().unwrap();
    let consumer = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut out = [0u8; 64];
            while let Some(d) = inc.recv().await {
                let n = d.payload().len();
                out[..n].copy_from_slice(d.payload());
                out[..n].make_ascii_uppercase();
                let _ = inc.reply(&d, &out[..n]);
            }
        })
    });
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    util::upper_rounds(&c, to, 300, &mut buf); // warm up: the pool's buffers, wakers
    let before = counting::total();
    util::upper_rounds(&c, to, 500, &mut buf);
    let after = counting::total();
    let s = engine.stop().unwrap();
    consumer.join().unwrap();
    let n = 500 * 32;
    eprintln!("{} allocations over {n} datagrams", after - before);
    assert_eq!(s.received, 800 * 32);
    assert!(
        after - before <= 2,
        "{} allocations over {n} datagrams",
        after - before
    );
}
