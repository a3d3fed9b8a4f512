//! The templated load path allocates nothing per datagram. The
//! same run is made twice in this process against an echo server in
//! another, once with 2 000 and once with 20 000 requests (udpring's
//! header: built in the send slot, the payload once per slot); a counting
//! allocator sees the whole process, and the second run may allocate
//! only what a longer run's housekeeping does, not one more allocation
//! per datagram.

mod util;

use std::sync::atomic::AtomicBool;

use udpring_cli::apps::load::{LoadOpts, Mode, run_load};

#[global_allocator]
static A: util::counting::Counting = util::counting::Counting;

fn allocations_for(
    target: std::net::SocketAddr,
    count: u64,
    gso: usize,
    window: u64,
) -> (u64, u64) {
    let mut o = LoadOpts::new(target);
    o.mode = Mode::Flood;
    o.duration = None;
    o.count = Some(count);
    o.window = Some(window);
    o.gso = gso;
    o.backend = Some(udpring::Backend::Mmsg);
    let cancel = AtomicBool::new(false);
    let before = util::counting::total();
    let r = run_load(&o, &cancel, |_| {}).unwrap();
    (util::counting::total() - before, r.counts.received)
}

#[test]
fn the_templated_load_path_allocates_nothing_per_datagram() {
    let echo = util::Server::echo();
    // A window of 64: one datagram (or train) per call; of 1024: without
    // GSO, 64 datagrams built per call in one slot (`send_each_with`),
    // with it 16 trains (`send_trains_with`).
    for (gso, window) in [(1, 64), (1, 1024), (8, 64), (8, 1024)] {
        let (small, got_small) = allocations_for(echo.addr, 2_000, gso, window);
        let (large, got_large) = allocations_for(echo.addr, 20_000, gso, window);
        assert!(
            got_small >= 1_900 && got_large >= 19_000,
            "{got_small} {got_large}"
        );
        eprintln!(
            "gso {gso} window {window}: {small} allocations for 2000 requests, {large} for 20000"
        );
        assert!(
            large <= small + 64,
            "gso {gso} window {window}: 18 000 more requests cost {} more allocations",
            large as i64 - small as i64
        );
    }
}
