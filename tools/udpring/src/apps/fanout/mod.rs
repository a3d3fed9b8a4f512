//! `udpring fanout`: every datagram received is sent on to every
//! destination (unicast addresses or multicast groups) from its own receive
//! buffer: one buffer, N sends, no copy, all submitted with the batch (one
//! `io_uring_enter` for many SQEs, or `sendmmsg` batches on `mmsg`).
//!
//! The relay listens on socket 0 and sends from socket 1, a socket of its
//! own (bound to the unspecified address: it can reach any destination,
//! and what destinations answer arrives there, where it is counted and
//! dropped, never relayed). A datagram whose source is one of the
//! destinations is dropped too (counted): two relays, or a relay and an
//! echo, cannot make a loop. A destination that refuses (ICMP port
//! unreachable) or whose sends fail is counted and does not hold up the
//! others.
//!
//! # Live subscribers (`--control ADDR`, socket 2)
//!
//! Destinations come from a static list (`--to`, never expiring) and from
//! subscribers, who send text datagrams to the control address and
//! receive the relayed stream at the address they sent from:
//!
//! | request | answer | effect |
//! |---|---|---|
//! | `SUB` padded with spaces to 32 bytes | `TOKEN <16 hex>` | none: the token proves the next request comes from this address |
//! | `SUB <token>` | `OK <expiry seconds>` (or `FULL`) | subscribes, or refreshes: a subscriber that does not refresh within the expiry is dropped |
//! | `UNSUB <token>` | `BYE` | leaves at once, and its token (every token of that address so far) is revoked |
//!
//! Anything else is counted and not answered. Sources can be forged, so a
//! subscription needs the token, which only a host that receives at the
//! claimed address can read; the relay keeps no state per token, answers
//! a first `SUB` with fewer bytes than it was sent, and holds at most
//! `max_subscribers` subscribers, `max_per_host` of one address and
//! `max_per_prefix` of one /24 (IPv4) or /48 (IPv6) (refusals counted,
//! answered `FULL`).
//!
//! # Loops
//!
//! Two relays sending to each other (statically, or one subscribed to the
//! other by a stranger who forged its `SUB`s) would pass one datagram back
//! and forth for ever. A udpring relay is a server: everything it sends
//! carries the server mark, and it relays nothing that carries it (the
//! engine's guard, `guard_marked`). So X's copy reaches Y and stops there,
//! and a token X sends to Y's listening address is never relayed to Y's
//! subscribers. A relay placed below another on purpose (a relay tree)
//! takes marked datagrams (`Guard::refuse_marked` off, `--accept-marked`):
//! such a relay must not be pointed back at its parent. The engine's guard
//! (`--allow` and the rest) applies to control datagrams as to the others.
//! Two relays that send to groups the other listens on are not stopped by
//! the mark (group datagrams leave with their scoping TTL): a relay with a
//! group among its destinations drops bytes it relayed that keep coming
//! back from elsewhere ([`laps`]).
//!
//! A subscriber receives every datagram the relay receives from the moment
//! its `SUB <token>` is handled until its `UNSUB` is (or it expires), and
//! each destination's sends, failures by errno and refusals are counted.

pub mod control;
pub mod laps;
mod table;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use control::{Generations, Refusal, Request, Tokens};
pub use table::{ControlCounts, Dest, Kind, State, Table, prefix_of};

use udpring::{Datagram, ErrorEvent, Handler, SendError, TimerId, Transport};

/// The socket the relay sends from (see the module doc).
pub const SEND_SOCKET: usize = 1;
/// The control socket, with `--control`.
pub const CONTROL_SOCKET: usize = 2;
/// Timer token of the expiry sweep.
const SWEEP: u64 = 1;

/// A count in `1..=1_000_000` for `flag`.
fn count(flag: &str, s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=1_000_000).contains(n))
        .ok_or_else(|| format!("{flag} {s} must be 1..1000000"))
}

/// How a relay runs: the options of `udpring fanout` that shape it.
#[derive(clap::Args, Clone, Debug)]
pub struct RelayOpts {
    /// Destinations, comma-separated ADDR:PORT (unicast or multicast);
    /// static: they never expire.
    #[arg(long, required_unless_present = "control", value_delimiter = ',', value_parser = crate::common::parse_addr)]
    pub to: Vec<SocketAddr>,
    /// Seconds a subscription lasts without a refresh (with --control).
    #[arg(long, default_value = "30", value_parser = crate::common::parse_secs, requires = "control")]
    pub expiry: Duration,
    /// Most live subscribers; more are answered FULL (counted).
    #[arg(long, default_value_t = 4096, value_parser = |s: &str| count("--max-subscribers", s), requires = "control")]
    pub max_subscribers: usize,
    /// Most departed destinations kept for the totals (as many as
    /// subscribers).
    #[arg(skip)]
    pub max_departed: usize,
    /// Most live subscribers at one address (any port); more are answered
    /// FULL (counted): one host cannot take the whole relay.
    #[arg(long, default_value_t = 16, value_parser = |s: &str| count("--max-per-host", s), requires = "control")]
    pub max_per_host: usize,
    /// Most live subscribers in one /24 (IPv4) or /48 (IPv6); more are
    /// answered FULL (counted).
    #[arg(long, default_value_t = 256, value_parser = |s: &str| count("--max-per-prefix", s), requires = "control")]
    pub max_per_prefix: usize,
}

impl RelayOpts {
    /// A relay to `to`, with room for 4096 subscribers expiring after 30 s,
    /// 16 per address and 256 per prefix.
    pub fn new(to: Vec<SocketAddr>) -> Self {
        RelayOpts {
            to,
            expiry: Duration::from_secs(30),
            max_subscribers: 4096,
            max_departed: 4096,
            max_per_host: 16,
            max_per_prefix: 256,
        }
    }
}

/// A relay's state, shared by its workers and whoever reports.
pub struct Relay {
    table: Mutex<Table>,
    opts: RelayOpts,
    tokens: Tokens,
    epoch: Instant,
}

impl Relay {
    /// A relay to `opts.to` (and subscribers, with a control socket).
    pub fn new(opts: RelayOpts) -> Arc<Self> {
        let mut t = Table {
            generations: Generations::new(opts.max_subscribers.max(1024)),
            ..Table::default()
        };
        for a in &opts.to {
            let a = udpring::os::canonical(*a);
            if !t.index.contains_key(&a) {
                t.add(Dest::new(a, Kind::Static, None));
            }
        }
        Arc::new(Relay {
            table: Mutex::new(t),
            tokens: Tokens::new(opts.expiry.as_secs().max(1)),
            opts,
            epoch: Instant::now(),
        })
    }

    /// The destinations and counters now.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn now_s(&self) -> u64 {
        self.epoch.elapsed().as_secs()
    }
}

/// An engine configuration for a relay listening on `listen`: the socket
/// to send from ([`SEND_SOCKET`]) is bound to the unspecified address,
/// and `control`, if any, is [`CONTROL_SOCKET`].
pub fn config(listen: SocketAddr, control: Option<SocketAddr>) -> udpring::Config {
    let mut cfg = udpring::Config::new(listen);
    cfg.also_bind = vec![udpring::os::unspecified_like(listen, 0)];
    cfg.also_bind.extend(control);
    cfg
}

/// The fan-out handler. Its engine needs a second socket to send from
/// (and a third for control; see [`config`]).
pub struct Fanout {
    relay: Arc<Relay>,
    /// This worker's sweep of expired subscribers, armed while the table
    /// holds one that can expire (an idle relay with none never wakes).
    sweeping: Option<TimerId>,
}

impl Fanout {
    /// A worker of `relay`.
    pub fn new(relay: Arc<Relay>) -> Self {
        Fanout {
            relay,
            sweeping: None,
        }
    }

    fn relay_data(&mut self, dgram: &Datagram<'_>, tx: &mut Transport<'_>) {
        let n = dgram.segments() as u64;
        let mut t = self.relay.table();
        if t.index.contains_key(&dgram.source()) {
            t.from_destination += n;
            return;
        }
        if t.group_dests > 0
            && t.laps
                .looped(dgram.payload(), dgram.source(), Instant::now())
        {
            t.looped += n;
            return;
        }
        t.received += n;
        for d in t.dests.iter_mut() {
            d.queued += n;
            match tx.forward_via(SEND_SOCKET, dgram, d.addr) {
                Ok(()) => {}
                Err(SendError::Exhausted) => d.fail(libc::ENOBUFS, n),
                Err(SendError::AddressFamily) => d.fail(libc::EAFNOSUPPORT, n),
                Err(_) => d.fail(libc::EINVAL, n),
            }
        }
    }

    fn control(&mut self, dgram: &Datagram<'_>, tx: &mut Transport<'_>) {
        let from = dgram.source();
        let now = self.relay.now_s();
        let req = control::parse(dgram.payload());
        let relay = self.relay.clone();
        let mut t = relay.table();
        let answer: Option<String> = match req {
            Err(Refusal::Malformed) => {
                t.control.malformed += 1;
                None
            }
            Err(Refusal::TooShort) => {
                t.control.too_short += 1;
                None
            }
            Ok(Request::Hello) => {
                t.control.tokens += 1;
                let g = t.generations.of(from);
                Some(format!("TOKEN {:016x}", relay.tokens.mint(from, g, now)))
            }
            Ok(Request::Subscribe(k) | Request::Unsubscribe(k))
                if !relay.tokens.check(from, t.generations.of(from), k, now) =>
            {
                t.control.bad_token += 1;
                None
            }
            Ok(Request::Subscribe(_)) => {
                let expires = Some(Instant::now() + relay.opts.expiry);
                let subs = t
                    .dests
                    .iter()
                    .filter(|d| d.kind == Kind::Subscriber)
                    .count();
                match t.index.get(&from).copied() {
                    Some(i) => {
                        if t.dests[i].kind == Kind::Subscriber {
                            t.dests[i].expires = expires;
                        }
                        t.control.refreshed += 1;
                        Some(format!("OK {}", relay.opts.expiry.as_secs()))
                    }
                    None if subs >= relay.opts.max_subscribers => {
                        t.control.full += 1;
                        Some("FULL".into())
                    }
                    None if t.hosted(from.ip()) >= relay.opts.max_per_host => {
                        t.control.host_full += 1;
                        Some("FULL".into())
                    }
                    None if t.in_prefix(from.ip()) >= relay.opts.max_per_prefix => {
                        t.control.prefix_full += 1;
                        Some("FULL".into())
                    }
                    None => {
                        t.add(Dest::new(from, Kind::Subscriber, expires));
                        t.control.subscribed += 1;
                        Some(format!("OK {}", relay.opts.expiry.as_secs()))
                    }
                }
            }
            Ok(Request::Unsubscribe(_)) => match t.index.get(&from).copied() {
                Some(i) if t.dests[i].kind == Kind::Subscriber => {
                    t.remove(i, State::Unsubscribed, relay.opts.max_departed);
                    t.control.unsubscribed += 1;
                    if t.generations.revoke(from, now, relay.tokens.lifetime_s()) {
                        t.control.revocations_forgotten += 1;
                    }
                    Some("BYE".into())
                }
                _ => {
                    t.control.not_subscribed += 1;
                    None
                }
            },
        };
        drop(t);
        if answer.as_deref().is_some_and(|a| a.starts_with("OK ")) {
            self.sweep_from_now(tx);
        }
        if let Some(a) = answer {
            // A full send queue is counted by the engine (send_exhausted);
            // the subscriber asks again.
            let _ = tx.send_to_via(CONTROL_SOCKET, a.as_bytes(), from);
        }
    }

    /// Arms this worker's sweep (a subscription that can expire is in the
    /// table, added or refreshed here). The table is shared: a worker
    /// stops sweeping only when it holds none, so the one that added a
    /// subscription sweeps until it is gone.
    fn sweep_from_now(&mut self, tx: &mut Transport<'_>) {
        if self.sweeping.is_none() {
            let every = (self.relay.opts.expiry / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(1));
            self.sweeping = Some(tx.call_every(every, SWEEP));
        }
    }

    fn sweep(&mut self, tx: &mut Transport<'_>) {
        let now = Instant::now();
        let max = self.relay.opts.max_departed;
        let mut t = self.relay.table();
        let mut i = 0;
        while i < t.dests.len() {
            if t.dests[i].expires.is_some_and(|e| e <= now) {
                t.remove(i, State::Expired, max);
                t.control.expired += 1;
            } else {
                i += 1;
            }
        }
        if !t.dests.iter().any(|d| d.expires.is_some())
            && let Some(id) = self.sweeping.take()
        {
            tx.cancel_timer(id);
        }
    }
}

impl Handler for Fanout {
    fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
        match dgram.socket() {
            SEND_SOCKET => self.relay.table().answers += dgram.segments() as u64,
            CONTROL_SOCKET => self.control(&dgram, tx),
            _ => self.relay_data(&dgram, tx),
        }
    }

    fn on_timer(&mut self, token: u64, tx: &mut Transport<'_>) {
        if token == SWEEP {
            self.sweep(tx);
        }
    }

    fn on_cancelled(&mut self, peer: Option<SocketAddr>, datagrams: u64) {
        if let Some(d) = self.relay.table().reported(peer) {
            d.cancelled += datagrams;
        }
    }

    fn on_error(&mut self, event: ErrorEvent, _tx: &mut Transport<'_>) {
        if let ErrorEvent::SendGivenUp { peer, datagrams } = event {
            if let Some(d) = self.relay.table().reported(peer) {
                d.blocked += datagrams;
            }
            return;
        }
        let (peer, errno) = match event {
            // Reports from the network about datagrams that left.
            ErrorEvent::ConnectionRefused { peer }
            | ErrorEvent::Unreachable { peer, .. }
            | ErrorEvent::PacketTooBig { peer, .. } => (peer, None),
            ErrorEvent::SendFailed { peer, errno } => (peer, Some(errno)),
            ErrorEvent::MessageTooLong { peer, .. } => (peer, Some(libc::EMSGSIZE)),
            ErrorEvent::Other { peer, .. } => (peer, None),
            // Events of kinds a later engine adds: about no destination.
            _ => (None, None),
        };
        match (self.relay.table().reported(peer), errno) {
            (Some(d), Some(e)) => d.fail(e, 1),
            (Some(d), None) => d.refused += 1,
            (None, _) => {}
        }
    }
}
