//! Where an engine binds: an address another socket holds is refused,
//! a `SO_REUSEPORT` group of the same user's other process included (the
//! kernel would let the engine's workers join it, and the two would split
//! the traffic without a word); groups that share a port on purpose
//! (`reuse_addr`, multicast) still do.

#[macro_use]
mod util;

use std::net::SocketAddr;

use udpring::{Backend, Engine};
use util::*;

/// A socket of this process with `SO_REUSEPORT` on a loopback port, as a
/// service of the same user holds one.
fn reuseport_holder() -> (socket2::Socket, SocketAddr) {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&loopback(false).into()).unwrap();
    let a = s.local_addr().unwrap().as_socket().unwrap();
    (s, a)
}

fn two_workers_on(bind: SocketAddr) -> udpring::Config {
    let mut cfg = config(Backend::Mmsg, false);
    cfg.bind = bind;
    cfg.workers = 2;
    cfg
}

#[test]
fn a_group_of_workers_is_refused_an_address_another_reuseport_socket_holds() {
    let (_holder, at) = reuseport_holder();
    for workers in [1, 2] {
        let mut cfg = two_workers_on(at);
        cfg.workers = workers;
        let e = Engine::start(cfg, |_| Echo::new()).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
        assert!(e.to_string().contains("address already in use"), "{e}");
    }
}

#[test]
fn a_second_engine_on_a_first_ones_port_is_refused_and_the_first_keeps_its_traffic() {
    let first = Engine::start(two_workers_on(loopback(false)), |_| Echo::new()).unwrap();
    let at = first.local_addr();
    let e = Engine::start(two_workers_on(at), |_| Echo::new())
        .err()
        .expect("refused");
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}");
    // Every request from many source ports (spread over the group by
    // the kernel's hash) is answered by the first.
    for _ in 0..8 {
        closed_loop(&client(false), at, 4);
    }
    assert_eq!(stop_clean(first).received, 32);
}

#[test]
fn engines_that_share_a_port_on_purpose_still_do() {
    let mut cfg = two_workers_on(loopback(false));
    cfg.reuse_addr = true;
    let first = Engine::start(cfg.clone(), |_| Echo::new()).unwrap();
    cfg.bind = first.local_addr();
    let second = Engine::start(cfg, |_| Echo::new()).expect("reuse_addr shares the port");
    stop_clean(second);
    stop_clean(first);
}
