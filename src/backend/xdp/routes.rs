//! The way out for each destination, as the kernel's route and neighbour
//! tables say (netlink), cached and budgeted per worker.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::sys::xdp::netlink::Netlink;

/// How long a route and neighbour lookup is trusted.
pub const ROUTE_TTL: Duration = Duration::from_secs(1);
/// How long "no MAC address yet" is trusted: the datagram that found it
/// went through the socket, which has the kernel resolve the neighbour,
/// so the next lookup soon finds it.
pub const UNRESOLVED_TTL: Duration = Duration::from_millis(20);
/// Destinations whose lookups are cached per worker.
pub const ROUTE_CACHE: usize = 4096;
/// Route and neighbour lookups (two netlink round trips each) per flush:
/// answers to a flood from many (perhaps forged) sources past this many go
/// through the ordinary socket, at the kernel's own cost, rather than
/// spending the worker on lookups.
pub const LOOKUPS_PER_FLUSH: u32 = 32;

/// A destination's way out, as the kernel said.
#[derive(Clone, Copy)]
pub(super) struct Way {
    /// The next hop's MAC, if the kernel has it; `None`: use the socket.
    pub(super) mac: Option<[u8; 6]>,
    /// The source the kernel would choose.
    pub(super) src: Option<IpAddr>,
    at: Instant,
}

/// The worker's view of the routes and neighbours it sends to.
pub(super) struct Routes {
    pub(super) nl: Netlink,
    pub(super) ifindex: u32,
    pub(super) cache: HashMap<IpAddr, Way>,
    /// Lookups left in this flush.
    pub(super) budget: u32,
}

impl Routes {
    pub(super) fn way(&mut self, dst: IpAddr, now: Instant) -> Way {
        if let Some(w) = self.cache.get(&dst) {
            let ttl = if w.mac.is_some() {
                ROUTE_TTL
            } else {
                UNRESOLVED_TTL
            };
            if now.duration_since(w.at) < ttl {
                return *w;
            }
        }
        if self.budget == 0 {
            // Not now: this one goes through the socket, nothing cached.
            return Way {
                mac: None,
                src: None,
                at: now,
            };
        }
        self.budget -= 1;
        if self.cache.len() >= ROUTE_CACHE {
            self.cache
                .retain(|_, w| now.duration_since(w.at) < ROUTE_TTL);
            if self.cache.len() >= ROUTE_CACHE {
                self.cache.clear();
            }
        }
        let way = match self.nl.route(dst) {
            Ok(r) if r.oif == self.ifindex => Way {
                mac: self.nl.neighbour(r.next_hop(dst), r.oif).ok().flatten(),
                src: r.prefsrc,
                at: now,
            },
            _ => Way {
                mac: None,
                src: None,
                at: now,
            },
        };
        self.cache.insert(dst, way);
        way
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_lookups_are_cached_and_budgeted_per_flush() {
        let mut r = Routes {
            nl: Netlink::new().unwrap(),
            ifindex: 1,
            cache: HashMap::new(),
            budget: 2,
        };
        let now = Instant::now();
        let ip = |k: u8| IpAddr::from([127, 0, 0, k]);
        // Loopback has no neighbours: the way is known, the MAC is not.
        assert_eq!(r.way(ip(2), now).mac, None);
        assert_eq!(r.way(ip(3), now).mac, None);
        assert_eq!((r.budget, r.cache.len()), (0, 2));
        // Out of budget: answered (through the socket), nothing asked or kept.
        let w = r.way(ip(4), now);
        assert_eq!((w.mac, w.src), (None, None));
        assert_eq!(r.cache.len(), 2);
        // Cached: no budget needed while fresh ...
        let _ = r.way(ip(2), now + UNRESOLVED_TTL / 2);
        assert_eq!(r.cache.len(), 2);
        // ... asked again once stale, when the budget allows.
        r.budget = 1;
        let _ = r.way(ip(2), now + UNRESOLVED_TTL * 2);
        assert_eq!(r.budget, 0);
        // A route leaving by another interface: the socket's way.
        r.budget = 1;
        r.ifindex = u32::MAX;
        assert_eq!(r.way(ip(9), now).mac, None);
    }
}
