//! Loop and reflection guards: which datagrams a worker hands its handler.
//!
//! A UDP service that answers whatever it is sent can be turned into half
//! of a packet loop (one forged datagram whose source is another
//! answering service, or the service itself, and the two answer each other
//! for ever: "Loop DoS", CVE-2024-2169) or into a reflector that sends a
//! victim what a stranger asked for. RFC 8085 (section 3.1.x) asks UDP
//! applications not to amplify, and FreeBSD inetd's built-in UDP services
//! refuse datagrams from the ports of other answering services and from
//! their own (`check_loop` in `usr.sbin/inetd/builtins.c`). The engine does
//! the same before the handler sees a datagram, for every app and library
//! user alike, and counts each refusal by reason ([`crate::Stats`]
//! `guard_*`):
//!
//! | reason | refused |
//! |---|---|
//! | `guard_bad_source` | source port 0, or a source address that no host sends from: unspecified, multicast, the limited broadcast or a local subnet's broadcast |
//! | `guard_marked` | a datagram another udpring server sent (it carries the server mark, below): answering it is how two servers make a loop |
//! | `guard_loop` | a source port that is one of this engine's own ports, on any host, of a datagram not sent to a group: a forged datagram "from ourselves", or from a twin service on another host (inetd's `check_loop` refuses the same) |
//! | `guard_broadcast` | a datagram sent to a broadcast address (unless [`Guard::broadcast_destinations`]) |
//! | `guard_port` | a source port of a service that answers whatever it is sent ([`REFLECTOR_PORTS`], or [`Guard::deny_ports`]) |
//! | `guard_not_allowed` | a source outside [`Guard::allow`] (when it is not empty) |
//! | `guard_rate` | a source over its share of [`Guard::per_source_rate`] |
//!
//! The state strangers can make grow is fixed: the rate limiter's table has
//! [`Guard::rate_table`] entries, and a new source evicts the oldest of a
//! few candidates (counted in `guard_evictions`). Nothing is allocated per
//! datagram.
//!
//! # Two servers never make a loop: the server mark
//!
//! Nothing in a datagram tells a client from a service: an echo server
//! on port 9000 sent one datagram forged from another on port 9100 answers
//! it, the other answers the answer, and so on for ever. The ports can be
//! any two, on any hosts, and the two can be of different kinds (an echo
//! and a relay, two relays sending to each other's listening ports from
//! ports of their own). The checks above cannot see that, and content
//! cannot either: a client that sends the same bytes again after each
//! answer (netperf's `UDP_RR`) looks exactly like a second echo server.
//!
//! So a udpring server says what it is outside the payload: every
//! unicast datagram it sends leaves with the IP TTL (IPv6 hop limit)
//! [`MARK_HOPS`] (200) instead of the system's 64, set once per socket
//! (`IP_TTL`, `IPV6_UNICAST_HOPS`): no cost per datagram. A udpring server
//! reads each datagram's TTL (`IP_RECVTTL`, `IPV6_RECVHOPLIMIT`: a control
//! message per datagram, or per GRO train) and hands its handler none
//! that arrives with 200 or up to [`MARK_SPAN`] (40) routers less: that
//! is another udpring server's answer or relay. Of any two udpring
//! servers, whichever answers first sends a marked datagram, and the other
//! refuses it: one forged datagram makes at most two handled datagrams and
//! one answer, on any ports and hosts, whatever the servers are (echo,
//! pong, relays, a library handler that replies).
//!
//! Its costs and its false positives, plainly:
//! - A sender whose datagrams arrive with a TTL from 160 to 200 is taken
//!   for a udpring server and not answered (counted). Systems send with 64
//!   (Linux, the BSDs, macOS, Android, iOS), 128 (Windows) or 255 (some
//!   routers and embedded stacks: those arrive above 200 unless they are
//!   over 55 routers away), so only a sender that sets such a TTL on
//!   purpose is refused, or one with a default of 255 that far away.
//! - Answers travel with TTL 200: further than 64 routers, which no path
//!   has. A client that insists on a TTL of 255 (mDNS, GTSM) needs
//!   [`Guard::mark_sends`] off.
//! - A middlebox that rewrites TTLs removes the mark: two servers on either
//!   side of it are guarded only by [`Guard::per_source_rate`].
//! - Datagrams sent to a group carry no mark: their TTL is the multicast
//!   TTL that scopes them (1 by default). Servers answer by unicast
//!   (marked), but two relays that each send to a group the other listens
//!   on pass datagrams round: `udpring fanout` stops that itself, by
//!   dropping bytes it relayed that keep coming back from elsewhere (its
//!   `laps` check); a handler that sends to groups what it receives from
//!   groups needs a check of its own.
//! - A udpring server and a server that is not udpring (on a port outside
//!   [`REFLECTOR_PORTS`]) can still answer each other: the mark needs
//!   udpring at one end. [`Guard::per_source_rate`] bounds what that
//!   costs.
//! - A client built on the engine sends requests to servers: it takes
//!   [`Guard::client`], which neither marks nor refuses marked datagrams,
//!   or a udpring server would not answer it. A service that is itself the
//!   client of another udpring server on the same engine (a forwarder)
//!   turns [`Guard::refuse_marked`] off and must not answer what those
//!   servers send.
//!
//! A server with a socket loop of its own, off the engine, speaks the mark
//! too: [`crate::os::set_server_mark`] on its socket, then
//! [`crate::os::recv_from_hops`] in place of `recv_from` and no answer to
//! a datagram [`is_marked`] says is another server's (`udpring reference
//! echo` does it so). It costs such a loop a `recvmsg` and a control
//! message per datagram: 1.02-1.05x the CPU of a `recv_from` loop in the
//! kv bench (PERF.md).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Instant;

/// The IP TTL / IPv6 hop limit of every unicast datagram a udpring server
/// sends (see the module doc).
pub const MARK_HOPS: u8 = 200;
/// A datagram that arrives with a TTL from `MARK_HOPS - MARK_SPAN` to
/// `MARK_HOPS` is taken for a udpring server's: 200 after at most 40
/// routers.
pub const MARK_SPAN: u8 = 40;

/// Whether a datagram that arrived with TTL / hop limit `hops` carries the
/// server mark (a socket loop of a program's own reads `hops` with
/// [`crate::os::recv_from_hops`]).
pub fn is_marked(hops: u8) -> bool {
    (MARK_HOPS - MARK_SPAN..=MARK_HOPS).contains(&hops)
}

/// Source ports of services that answer what they are sent, whose
/// datagrams a service must never answer (each could be the other half of
/// a loop or a reflector): the inetd built-ins and the services named in
/// the Loop DoS advisory (CVE-2024-2169) and in amplification surveys.
pub const REFLECTOR_PORTS: &[u16] = &[
    7,     // echo
    9,     // discard
    11,    // systat (active users)
    13,    // daytime
    17,    // qotd
    19,    // chargen
    37,    // time
    53,    // DNS
    69,    // TFTP
    111,   // portmapper
    123,   // NTP
    137,   // NetBIOS name service
    161,   // SNMP
    162,   // SNMP trap
    389,   // CLDAP
    520,   // RIP
    1434,  // MS SQL resolution
    1900,  // SSDP
    3702,  // WS-Discovery
    5353,  // mDNS
    5683,  // CoAP
    11211, // memcached
];

/// An address prefix: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// `addr/len`; `None` when `len` is longer than the address.
    pub fn new(addr: IpAddr, len: u8) -> Option<Cidr> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (len <= max).then_some(Cidr { addr, len })
    }

    /// Whether `ip` lies inside (an IPv4 prefix also holds the v4-mapped
    /// IPv6 form of its addresses).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => prefix_eq(&a.octets(), &b.octets(), self.len),
            (IpAddr::V6(a), IpAddr::V6(b)) => prefix_eq(&a.octets(), &b.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let (whole, rest) = ((bits / 8) as usize, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("'{s}' is not an address or ADDR/LEN prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("'{s}': the prefix length must be 0..{max}"))?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// A token bucket per source address.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Datagrams per second each source may send, on average.
    pub per_second: f64,
    /// How many it may send at once after a quiet spell.
    pub burst: u32,
}

/// Which datagrams the engine refuses before they reach the handler; see
/// the module documentation for each check. On by default
/// ([`Guard::default`]); [`Guard::off`] for a library user who does this
/// itself.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Guard {
    /// Every check at all. Off: every datagram reaches the handler.
    pub enabled: bool,
    /// Source ports refused: by default [`REFLECTOR_PORTS`]. A client of
    /// services on those ports (a DNS or NTP load generator) empties it.
    pub deny_ports: Vec<u16>,
    /// Only sources inside these prefixes (empty: any source).
    pub allow: Vec<Cidr>,
    /// A token bucket per source address, or none.
    pub per_source_rate: Option<RateLimit>,
    /// Sources the rate limiter tracks at once (a fixed table).
    pub rate_table: usize,
    /// Hand over datagrams sent to a broadcast address (a discovery
    /// responder). Off by default: a reply to a broadcast reaches the
    /// sender once per host on the subnet.
    pub broadcast_destinations: bool,
    /// Send every unicast datagram with the server mark (TTL / hop limit
    /// [`MARK_HOPS`]), so that other udpring servers do not answer it.
    /// On for a server ([`Guard::default`]), off for a client.
    pub mark_sends: bool,
    /// Refuse datagrams that carry the server mark (`guard_marked`): other
    /// udpring servers' answers and relays. On for a server, off for a
    /// client.
    pub refuse_marked: bool,
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            enabled: true,
            deny_ports: REFLECTOR_PORTS.to_vec(),
            allow: Vec::new(),
            per_source_rate: None,
            rate_table: 4096,
            broadcast_destinations: false,
            mark_sends: true,
            refuse_marked: true,
        }
    }
}

impl Guard {
    /// No checks at all.
    pub fn off() -> Self {
        Guard {
            enabled: false,
            ..Guard::default()
        }
    }

    /// The checks for a client: sources on the reflector ports are the
    /// services it talks to, so they are not refused, nor are the marked
    /// answers of udpring servers, and its requests go unmarked (a udpring
    /// server answers them); the rest stays.
    pub fn client() -> Self {
        Guard {
            deny_ports: Vec::new(),
            mark_sends: false,
            refuse_marked: false,
            ..Guard::default()
        }
    }

    /// Whether the engine's sockets send with the server mark.
    pub(crate) fn marks(&self) -> bool {
        self.enabled && self.mark_sends
    }

    /// Whether the engine reads each datagram's TTL to refuse marked ones.
    pub(crate) fn reads_marks(&self) -> bool {
        self.enabled && self.refuse_marked
    }

    /// Checks the numbers; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = self.per_source_rate
            && !(r.per_second.is_finite() && r.per_second > 0.0 && r.burst >= 1)
        {
            return Err(format!(
                "guard.per_source_rate must be > 0 per second with a burst >= 1, not {}/s burst {}",
                r.per_second, r.burst
            ));
        }
        // Off means no check at all: an allowlist or a rate limit given
        // with it would not be enforced, and that must not pass silently.
        if !self.enabled && (!self.allow.is_empty() || self.per_source_rate.is_some()) {
            return Err(
                "guard.allow and guard.per_source_rate are not enforced with guard.enabled \
                 off (Guard::off): keep the guard on to use them"
                    .into(),
            );
        }
        if !(1..=1 << 20).contains(&self.rate_table) {
            return Err(format!(
                "guard.rate_table must be 1..1048576 sources, not {}",
                self.rate_table
            ));
        }
        Ok(())
    }
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    BadSource,
    Marked,
    Loop,
    Broadcast,
    Port,
    NotAllowed,
    Rate,
}

/// What this host looks like from the network, read at start.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostAddrs {
    /// IPv4 subnet broadcast addresses.
    pub broadcast: Vec<Ipv4Addr>,
}

impl HostAddrs {
    /// From `getifaddrs(3)`: each IPv4 address's subnet broadcast, from
    /// its address and netmask (what `getifaddrs` reports as the broadcast
    /// address is the interface's own address when none was configured,
    /// which would make every unicast datagram look like a broadcast).
    pub fn read() -> HostAddrs {
        let mut h = HostAddrs::default();
        if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
            for ifa in addrs {
                let addr = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in());
                let mask = ifa.netmask.as_ref().and_then(|m| m.as_sockaddr_in());
                if let (Some(a), Some(m)) = (addr, mask)
                    && let Some(b) = subnet_broadcast(a.ip(), m.ip())
                {
                    h.broadcast.push(b);
                }
            }
        }
        h.broadcast.sort_unstable();
        h.broadcast.dedup();
        h
    }

    pub(crate) fn is_broadcast(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => v4.is_broadcast() || self.broadcast.contains(&v4),
            IpAddr::V6(_) => false,
        }
    }
}

/// The broadcast address of `addr`'s subnet; none for /31 and /32 (a
/// point-to-point link or a host route has no broadcast address).
fn subnet_broadcast(addr: Ipv4Addr, mask: Ipv4Addr) -> Option<Ipv4Addr> {
    let m = u32::from(mask);
    (m.leading_ones() < 31).then(|| Ipv4Addr::from(u32::from(addr) | !m))
}

/// One slot of the rate limiter's table.
#[derive(Clone, Copy, Default)]
struct Bucket {
    /// The source (an IPv4 address as its v4-mapped form); 0 = empty.
    key: u128,
    /// Tokens, in millionths of a datagram.
    tokens: u64,
    /// When the bucket was last filled, ns since the limiter's epoch.
    at: u64,
}

/// Candidate slots per source: a new source takes a free one or evicts the
/// least recently used of these.
const PROBES: usize = 8;

/// Per-source token buckets in a fixed table.
struct Limiter {
    table: Box<[Bucket]>,
    mask: usize,
    /// Refill per ns, in millionths of a datagram.
    rate_per_ns: f64,
    burst: u64,
    epoch: Instant,
}

impl Limiter {
    fn new(r: RateLimit, entries: usize) -> Limiter {
        let n = entries.next_power_of_two().max(PROBES);
        Limiter {
            table: vec![Bucket::default(); n].into_boxed_slice(),
            mask: n - 1,
            rate_per_ns: r.per_second * 1e6 / 1e9,
            burst: u64::from(r.burst) * 1_000_000,
            epoch: Instant::now(),
        }
    }

    fn key(ip: IpAddr) -> u128 {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        // Never 0 (the empty mark): :: is refused as a bad source earlier.
        u128::from(v6).max(1)
    }

    fn hash(key: u128) -> usize {
        // A multiplicative mix of both halves.
        let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(32);
        (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 20) as usize
    }

    /// Takes a token for `ip`; false when it has none. `evicted` is set
    /// when a tracked source had to make room.
    fn allow(&mut self, ip: IpAddr, evicted: &mut bool) -> bool {
        let key = Limiter::key(ip);
        let now = self.epoch.elapsed().as_nanos() as u64;
        let h = Limiter::hash(key);
        let mut victim = h & self.mask;
        let mut slot = None;
        for p in 0..PROBES {
            let i = (h + p) & self.mask;
            let b = &self.table[i];
            if b.key == key {
                slot = Some(i);
                break;
            }
            if b.key == 0 {
                victim = i;
                break;
            }
            if b.at < self.table[victim].at {
                victim = i;
            }
        }
        let i = match slot {
            Some(i) => i,
            None => {
                *evicted = self.table[victim].key != 0;
                self.table[victim] = Bucket {
                    key,
                    tokens: self.burst,
                    at: now,
                };
                victim
            }
        };
        let b = &mut self.table[i];
        let refill = (now.saturating_sub(b.at) as f64 * self.rate_per_ns) as u64;
        b.tokens = b.tokens.saturating_add(refill).min(self.burst);
        b.at = now;
        if b.tokens >= 1_000_000 {
            b.tokens -= 1_000_000;
            true
        } else {
            false
        }
    }
}

/// A worker's guard: the configuration, what the host looks like, and the
/// rate limiter's state.
pub(crate) struct GuardState {
    enabled: bool,
    /// One bit per port: refused source ports.
    deny: Box<[u64; 1024]>,
    allow: Vec<Cidr>,
    broadcast_destinations: bool,
    refuse_marked: bool,
    /// Every port this engine is bound to (a source on one of them is
    /// ourselves or a twin service: half of a loop).
    own_ports: Vec<u16>,
    host: HostAddrs,
    limiter: Option<Limiter>,
}

impl GuardState {
    pub fn new(g: &Guard, own_ports: Vec<u16>, host: HostAddrs) -> GuardState {
        let mut deny = Box::new([0u64; 1024]);
        for &p in &g.deny_ports {
            deny[usize::from(p) / 64] |= 1 << (p % 64);
        }
        GuardState {
            enabled: g.enabled,
            deny,
            allow: g.allow.clone(),
            broadcast_destinations: g.broadcast_destinations,
            refuse_marked: g.refuse_marked,
            own_ports,
            host,
            limiter: g.per_source_rate.map(|r| Limiter::new(r, g.rate_table)),
        }
    }

    /// Whether a datagram from `src` (canonical: v4-mapped shown as IPv4)
    /// sent to `dst` (when the kernel said), arrived with TTL / hop limit
    /// `hops` (when asked), may reach the handler. `evicted` is set when
    /// the rate limiter dropped a tracked source.
    pub fn check(
        &mut self,
        src: SocketAddr,
        dst: Option<IpAddr>,
        hops: Option<u8>,
        evicted: &mut bool,
    ) -> Result<(), Refusal> {
        if !self.enabled {
            return Ok(());
        }
        let ip = src.ip();
        let bad = src.port() == 0
            || ip.is_unspecified()
            || ip.is_multicast()
            || ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            || self.host.is_broadcast(ip);
        if bad {
            return Err(Refusal::BadSource);
        }
        if self.refuse_marked && hops.is_some_and(is_marked) {
            return Err(Refusal::Marked);
        }
        // Our own port as the source of a datagram sent to a group is our
        // own multicast heard back (IP_MULTICAST_LOOP) or a peer on the
        // group's port: answers go by unicast, so no loop. Sent to us, it
        // is ourselves or a twin: half of a loop.
        if self.own_ports.contains(&src.port()) && !dst.is_some_and(|d| d.is_multicast()) {
            return Err(Refusal::Loop);
        }
        if let Some(d) = dst
            && !self.broadcast_destinations
            && self.host.is_broadcast(d)
        {
            return Err(Refusal::Broadcast);
        }
        let p = src.port();
        if self.deny[usize::from(p) / 64] & (1 << (p % 64)) != 0 {
            return Err(Refusal::Port);
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Refusal::NotAllowed);
        }
        if let Some(l) = &mut self.limiter
            && !l.allow(ip, evicted)
        {
            return Err(Refusal::Rate);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
