//! A server bound to the wildcard address of a host with
//! two addresses per family on one link answers from the address it was
//! asked on. h2 of the LAN gets a second address per family (10.201.0.12,
//! fd00:201::12, which the kernel does not pick as a source towards h1:
//! the IPv4 one is secondary, the IPv6 one shares a shorter prefix with
//! h1's); clients on h1, plain and connected, ask each address.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::topo::{Topology, sh_in};

/// What a client on h1 saw when it asked `to`: the answer's source for an
/// unconnected socket, whether a connected socket got an answer at all.
fn ask(topo: &Topology, to: SocketAddr) -> (Option<SocketAddr>, bool) {
    topo.run_in("h1", move || {
        let any: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let mut buf = [0u8; 64];
        let plain = UdpSocket::bind(any).unwrap();
        plain
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut from = None;
        for _ in 0..3 {
            plain.send_to(b"which address?", to).unwrap();
            if let Ok((_, f)) = plain.recv_from(&mut buf) {
                from = Some(f);
                break;
            }
        }
        // A connected socket drops datagrams from any other source.
        let conn = UdpSocket::bind(any).unwrap();
        conn.connect(to).unwrap();
        conn.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut answered = false;
        for _ in 0..3 {
            conn.send(b"connected").unwrap();
            if conn.recv(&mut buf).is_ok() {
                answered = true;
                break;
            }
        }
        (from, answered)
    })
}

fn replies_from_the_address_asked(backend: &str, tag: &str) {
    let topo = crate::topology!(lan, tag);
    sh_in(
        &topo,
        "h2",
        "ip addr add 10.201.0.12/24 dev e0 && ip addr add fd00:201::12/64 dev e0 nodad",
    );
    let echo = |bind: &str| {
        topo.server(
            "h2",
            &crate::util::words(&format!(
                "echo --bind {} --backend {} --workers 1 -q --duration 30",
                bind, backend
            )),
        )
    };
    // An IPv4 socket on 0.0.0.0, and a dual-stack one on [::] (IPv4
    // arrives v4-mapped there).
    let _v4 = echo("0.0.0.0:7301");
    let _v6 = echo("[::]:7302");
    let mut cases: Vec<SocketAddr> = Vec::new();
    for ip in ["10.201.0.2", "10.201.0.12"] {
        cases.push(format!("{ip}:7301").parse().unwrap());
        cases.push(format!("{ip}:7302").parse().unwrap());
    }
    for ip in ["fd00:201::2", "fd00:201::12"] {
        cases.push(format!("[{ip}]:7302").parse().unwrap());
    }
    for to in cases {
        let (from, connected) = ask(&topo, to);
        assert_eq!(from, Some(to), "{backend}: the answer to {to} came from");
        assert!(
            connected,
            "{backend}: a connected client of {to} got no answer"
        );
    }
}

#[test]
fn a_wildcard_server_answers_from_the_address_asked_uring() {
    replies_from_the_address_asked("uring", "su");
}

#[test]
fn a_wildcard_server_answers_from_the_address_asked_mmsg() {
    replies_from_the_address_asked("mmsg", "sm");
}
