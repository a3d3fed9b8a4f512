//! The relay's destinations (static and subscribed) and its counters,
//! shared by its workers: [`Table`].

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use super::control::Generations;

/// Where a destination came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The static list: never expires.
    Static,
    /// A subscriber on the control socket.
    Subscriber,
}

impl Kind {
    /// The word the text report and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Static => "static",
            Kind::Subscriber => "subscriber",
        }
    }
}

/// Whether a destination still receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// It does.
    Live,
    /// It sent `UNSUB`.
    Unsubscribed,
    /// It did not refresh within the expiry.
    Expired,
}

impl State {
    /// The word the text report and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            State::Live => "live",
            State::Unsubscribed => "unsubscribed",
            State::Expired => "expired",
        }
    }
}

/// One destination and what was sent to it.
#[derive(Clone, Debug)]
pub struct Dest {
    /// Where its datagrams go.
    pub addr: SocketAddr,
    /// Static or subscriber.
    pub kind: Kind,
    /// Live, or why not.
    pub state: State,
    /// Datagrams queued for it.
    pub queued: u64,
    /// Of those, refused by the kernel or by a full send queue (each
    /// errno in `errors`).
    pub failed: u64,
    /// Of those, given up by the engine: the socket's send buffer stayed
    /// full.
    pub blocked: u64,
    /// Of those, still queued or in flight at the stop: cancelled.
    pub cancelled: u64,
    /// Reports from the network about datagrams that left for it (ICMP
    /// port, host or network unreachable; packet too big for a hop).
    pub refused: u64,
    /// Failed sends by errno (`ENOBUFS`: no send slot was free).
    pub errors: BTreeMap<i32, u64>,
    pub(super) expires: Option<Instant>,
}

impl Dest {
    pub(super) fn new(addr: SocketAddr, kind: Kind, expires: Option<Instant>) -> Self {
        Dest {
            addr,
            kind,
            state: State::Live,
            queued: 0,
            failed: 0,
            blocked: 0,
            cancelled: 0,
            refused: 0,
            errors: BTreeMap::new(),
            expires,
        }
    }

    /// Datagrams the kernel took for it: queued minus failed, given up and
    /// cancelled. Exact once the engine has stopped (every send's outcome
    /// is then known).
    pub fn forwarded(&self) -> u64 {
        self.queued
            .saturating_sub(self.failed + self.blocked + self.cancelled)
    }

    pub(super) fn fail(&mut self, errno: i32, n: u64) {
        self.failed += n;
        *self.errors.entry(errno).or_default() += n;
    }
}

/// What the control socket was sent, by outcome (counts of datagrams).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ControlCounts {
    /// First `SUB`s answered with a token.
    pub tokens: u64,
    /// Subscriptions made.
    pub subscribed: u64,
    /// Subscriptions refreshed (and `SUB` from a static destination).
    pub refreshed: u64,
    /// `UNSUB`s that ended a subscription.
    pub unsubscribed: u64,
    /// Subscriptions dropped for want of a refresh.
    pub expired: u64,
    /// Requests with a token that is not the sender's (or too old).
    pub bad_token: u64,
    /// `SUB`s refused because `max_subscribers` were live.
    pub full: u64,
    /// `SUB`s refused because the address had `max_per_host` live.
    pub host_full: u64,
    /// `SUB`s refused because the prefix had `max_per_prefix` live.
    pub prefix_full: u64,
    /// Revocations forgotten early to keep the table bounded (their old
    /// tokens were valid again until they expired).
    pub revocations_forgotten: u64,
    /// `UNSUB`s from no subscriber.
    pub not_subscribed: u64,
    /// Not a request of the protocol: `invalid`, as in every document.
    #[serde(rename = "invalid")]
    pub malformed: u64,
    /// First `SUB`s shorter than the answer would be.
    pub too_short: u64,
}

/// The relay's destinations and counters, shared by its workers.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Live destinations.
    pub dests: Vec<Dest>,
    pub(super) index: HashMap<SocketAddr, usize>,
    /// Destinations that left (oldest first), at most `max_departed`.
    pub departed: Vec<Dest>,
    /// Departed destinations not kept (beyond `max_departed`).
    pub departed_dropped: u64,
    /// Datagrams received on the listening socket and relayed.
    pub received: u64,
    /// Received from one of the destinations: dropped, not relayed.
    pub from_destination: u64,
    /// Bytes relayed lately that came back from elsewhere once too often
    /// (a loop through groups, [`laps`](super::laps)): dropped, not relayed.
    pub looped: u64,
    /// Live destinations that are groups: while there are any, what is
    /// relayed is remembered ([`laps`](super::laps)).
    pub(super) group_dests: usize,
    pub(super) laps: super::laps::Laps,
    /// Arrived on the sending socket (answers of destinations): dropped.
    pub answers: u64,
    /// Error reports about no live destination.
    pub other_errors: u64,
    /// The control socket's requests.
    pub control: ControlCounts,
    /// Live subscribers per address and per prefix.
    pub(super) per_host: HashMap<IpAddr, usize>,
    pub(super) per_prefix: HashMap<IpAddr, usize>,
    /// Addresses whose tokens were revoked lately.
    pub(super) generations: Generations,
}

/// The prefix a subscriber's address is counted under: its /24 (IPv4) or
/// /48 (IPv6).
pub fn prefix_of(ip: IpAddr) -> IpAddr {
    match udpring::os::canonical_ip(ip) {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & 0xffff_ff00)),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !((1u128 << 80) - 1))),
    }
}

impl Table {
    pub(super) fn add(&mut self, d: Dest) {
        self.group_dests += usize::from(d.addr.ip().is_multicast());
        if d.kind == Kind::Subscriber {
            let ip = udpring::os::canonical_ip(d.addr.ip());
            *self.per_host.entry(ip).or_default() += 1;
            *self.per_prefix.entry(prefix_of(ip)).or_default() += 1;
        }
        self.index.insert(d.addr, self.dests.len());
        self.dests.push(d);
    }

    pub(super) fn remove(&mut self, i: usize, why: State, max_departed: usize) {
        let mut d = self.dests.swap_remove(i);
        self.group_dests -= usize::from(d.addr.ip().is_multicast());
        if d.kind == Kind::Subscriber {
            let ip = udpring::os::canonical_ip(d.addr.ip());
            for (map, key) in [
                (&mut self.per_host, ip),
                (&mut self.per_prefix, prefix_of(ip)),
            ] {
                if let Some(n) = map.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&key);
                    }
                }
            }
        }
        self.index.remove(&d.addr);
        if let Some(moved) = self.dests.get(i) {
            self.index.insert(moved.addr, i);
        }
        d.state = why;
        if self.departed.len() < max_departed {
            self.departed.push(d);
        } else {
            self.departed_dropped += 1;
        }
    }

    /// Live subscribers at `ip` (any port).
    pub fn hosted(&self, ip: IpAddr) -> usize {
        self.per_host
            .get(&udpring::os::canonical_ip(ip))
            .copied()
            .unwrap_or(0)
    }

    /// Live subscribers in `ip`'s prefix ([`prefix_of`]).
    pub fn in_prefix(&self, ip: IpAddr) -> usize {
        self.per_prefix.get(&prefix_of(ip)).copied().unwrap_or(0)
    }

    /// The live destination an engine report names, or, about none (no
    /// peer, or one that is not a destination), `None` counted in
    /// `other_errors`.
    pub(super) fn reported(&mut self, peer: Option<SocketAddr>) -> Option<&mut Dest> {
        match peer.and_then(|p| self.index.get(&udpring::os::canonical(p)).copied()) {
            Some(i) => Some(&mut self.dests[i]),
            None => {
                self.other_errors += 1;
                None
            }
        }
    }

    /// Live destination `addr`, if any.
    pub fn live(&self, addr: SocketAddr) -> Option<&Dest> {
        self.index
            .get(&udpring::os::canonical(addr))
            .map(|&i| &self.dests[i])
    }
}
