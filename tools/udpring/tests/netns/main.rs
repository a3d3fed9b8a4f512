//! Tests across network namespaces the test builds itself (tools/netns.sh):
//! host A, router R, host B, with a 1280-byte IPv4 and 1400-byte IPv6 path
//! MTU; and a LAN of three hosts on a bridge for multicast and broadcast.
//! They need root; elsewhere they say why they skip, and with
//! `UDPRING_REQUIRE_NETNS=1` (set by .ci/run) they fail instead.
//!
//! One test binary; `topo.rs` builds the topologies, then one file per
//! subject: `pmtu.rs` (path MTU), `mcast.rs` (the multicast and broadcast
//! API on the LAN), `broadcast.rs` (the command's broadcast with the seed
//! chapter's programs), `peers.rs` (udpring against programs it did not
//! write: the seeds' Twisted programs, discovery responders),
//! `source.rs` (replies from the address asked), `congestion.rs` (slow
//! links: stops, counts), `tools.rs` (the
//! command's multicast tools and fan-out across hosts), `xdp/` (the
//! AF_XDP backend on a veth pair).

#[path = "../util/mod.rs"]
#[macro_use]
mod util;

mod accounting;
mod broadcast;
mod congestion;
mod fleet;
mod guard;
mod mcast;
mod peers;
mod pmtu;
mod socket_controls;
mod source;
mod tools;
mod topo;
mod xdp;
