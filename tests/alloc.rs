//! Zero heap allocations per datagram in steady state, for every backend:
//! a counting global allocator watches the whole process while a client
//! drives thousands of echoes through a warmed-up engine.
//!
//! The count is of the whole process, so this binary holds one test, which
//! takes the backends in turn: with one test per backend, the harness's own
//! thread allocated while a test counted (printing another test's result,
//! spawning the next test's thread: 2 and 13 allocations, seen with both
//! CPUs taken by other work).

mod util;

use udpring::{Backend, Engine};
use util::Echo;
use util::*;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

fn rounds(c: &std::net::UdpSocket, to: std::net::SocketAddr, n: usize, buf: &mut [u8]) {
    let payload = [7u8; 64];
    for _ in 0..n / 16 {
        for _ in 0..16 {
            c.send_to(&payload, to).unwrap();
        }
        for _ in 0..16 {
            if let Err(e) = c.recv_from(buf) {
                panic!("echo from {to}: {e}");
            }
        }
    }
}

#[test]
fn no_heap_allocation_per_datagram_in_steady_state() {
    for backend in [Backend::Uring, Backend::Mmsg, Backend::Simple] {
        if can_run(backend) {
            steady_state(backend);
        }
    }
}

fn steady_state(backend: Backend) {
    for gro in [false, true] {
        let mut cfg = config(backend, false);
        cfg.gro = gro;
        let engine = Engine::start(cfg, |_| Echo::new()).unwrap();
        let to = engine.local_addr();
        let c = client(false);
        let mut buf = [0u8; 2048];
        rounds(&c, to, 512, &mut buf); // warm up
        let before = counting::total();
        rounds(&c, to, 4096, &mut buf);
        let after = counting::total();
        let s = stop_clean(engine);
        assert_eq!(s.received, 512 + 4096);
        assert_eq!(
            after - before,
            0,
            "{backend} gro={gro}: {} allocations during 4096 echoes",
            after - before
        );
    }
}
