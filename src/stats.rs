//! Counters of a worker, or of all workers added up.
//!
//! Every counter is named once, in the `counters!` list below, with its
//! unit and meaning. From that one list come: the worker's counters
//! (`SharedCounters`, bumped in place by the worker, its only writer, and
//! read by any thread: nothing to copy out per loop), a plain snapshot of
//! them (`Counters`), the public snapshot [`Stats`] with its `merge`, and
//! [`Stats::counters`], the `(name, value)` pairs every printer (the CLI's
//! lines, JSON, metrics) walks instead of spelling the list again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Largest errno tracked one by one; larger ones share the last bucket.
pub(crate) const MAX_ERRNO: usize = 134;

macro_rules! counters {
    ($( $(#[doc = $doc:expr])+ $name:ident, )*) => {
        /// A snapshot of a worker's counters.
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub(crate) struct Counters {
            $( pub $name: u64, )*
        }

        /// A worker's counters: bumped by the worker (their only writer)
        /// where it counts, read by any thread. On cache lines of their
        /// own, so that no other thread's writes to a neighbour on the
        /// heap take the lines from under the worker.
        #[derive(Default)]
        #[repr(align(64))]
        pub(crate) struct SharedCounters {
            $( pub $name: Count, )*
        }

        impl SharedCounters {
            /// Bumps each counter by its 1-based place in the list.
            #[cfg(test)]
            fn bump_numbered(&self) {
                let mut i = 0;
                $( i += 1; self.$name.add(i); )*
            }
            fn load(&self) -> Counters {
                Counters { $( $name: self.$name.get(), )* }
            }
        }

        /// A snapshot of a worker's counters (or their sum). Counts are in
        /// datagrams unless a field says otherwise.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize))]
        pub struct Stats {
            $( $(#[doc = $doc])+ pub $name: u64, )*
            /// Slots in the pools.
            pub slots_total: u64,
            /// Slots not home (lent or in flight); 0 when idle.
            pub slots_out: u64,
            /// GSO was turned off after the kernel refused it.
            pub gso_disabled: bool,
            /// Datagrams whose send failed, by errno: `(errno, count)`,
            /// sorted by errno (in JSON, an object from errno name to
            /// count); each segment of a refused GSO send counts.
            #[cfg_attr(feature = "serde", serde(serialize_with = "errno_counts"))]
            pub send_errors: Vec<(i32, u64)>,
        }

        impl Stats {
            /// Every counter's name and one-line meaning, in order.
            pub const COUNTERS: &'static [(&'static str, &'static str)] =
                &[ $( (stringify!($name), concat!($($doc),+)) ),* ];

            /// Every counter as `(name, value)`, in the order of
            /// [`Stats::COUNTERS`].
            pub fn counters(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
                [ $( (stringify!($name), self.$name) ),* ].into_iter()
            }

            fn set_counters(&mut self, c: &Counters) {
                $( self.$name = c.$name; )*
            }

            fn add_counters(&mut self, o: &Stats) {
                $( self.$name = self.$name.saturating_add(o.$name); )*
            }
        }
    };
}

counters! {
    /// Datagrams received (each segment of a GRO train counts).
    received,
    /// Datagrams sent (each segment of a GSO train counts).
    sent,
    /// Buffers received from the kernel: a GRO train counts once. This is
    /// the kernel's own unit (`/proc/net/snmp` Udp `InDatagrams`).
    received_bufs,
    /// Sends the kernel took: a GSO train counts once (`/proc/net/snmp`
    /// Udp `OutDatagrams`).
    sent_bufs,
    /// Payload bytes received.
    bytes_received,
    /// Payload bytes sent.
    bytes_sent,
    /// Datagrams larger than a slot, delivered cut.
    truncated,
    /// Times the buffer ring ran empty (`ENOBUFS`); the datagrams waited in
    /// the socket and were received after the ring was refilled.
    enobufs,
    /// Buffers the kernel dropped at the sockets (receive buffer full):
    /// `SO_MEMINFO`'s drop counter summed over the sockets, read at least
    /// every 100 ms and at stop (so a drop after the last datagram counts
    /// too). Kernel buffers: a GRO train counts once.
    kernel_drops,
    /// Sends refused because every send slot was in flight.
    send_exhausted,
    /// Datagrams given up because the network would not take them: the
    /// socket's send buffer (or the queue discipline) stayed full while
    /// they waited, holding buffers the worker needed to go on receiving.
    send_blocked,
    /// Datagrams queued or in flight at a stop that never went out.
    cancelled,
    /// Kernel buffers still queued at the sockets when the worker stopped,
    /// read at the stop and dropped unseen by the handler (a GRO train
    /// counts once): `received_bufs` plus these is what the kernel queued
    /// at the sockets (its `InDatagrams`). Sockets handed in
    /// (`Engine::start_on`) keep their queue for their next holder.
    unread_at_stop,
    /// Zero-copy sends (`Config::send_zero_copy_min`) the kernel sent from
    /// the slot itself (sends, a GSO train once).
    zc_sent,
    /// Zero-copy sends the kernel copied after all (its notification said
    /// so: loopback and local delivery always copy).
    zc_copied,
    /// GSO trains the worker made of small datagrams (up to 512 bytes)
    /// queued one after another to one destination with one size: one send
    /// for what took one each, the bytes copied into one send slot
    /// (`Config::coalesce`). Each is one of `sent_bufs`.
    coalesced,
    /// Of those, trains the kernel refused as trains (a device without
    /// checksum offload): sent again one datagram at a time, and the
    /// worker makes no more trains.
    coalesce_refused,
    /// Error events handed to the handler.
    error_events,
    /// TX timestamps handed to the handler (`on_tx_timestamp`).
    tx_timestamps,
    /// Times the receive was armed (1 + re-arms after ENOBUFS or errors).
    recv_arms,
    /// Times the worker's loop entered the kernel to wait for work: an
    /// `io_uring_enter` that asks for completions (`uring`), a `ppoll`
    /// (`mmsg`, `simple`, `xdp`); a busy-polling worker's checks count
    /// too. In a closed loop, system calls per request are about this over
    /// `received` on `uring` (it submits the replies in the same call).
    waits,
    /// uring at light load ([`Config::park`](crate::Config::park)): waits
    /// in `recvmsg(2)` on the socket itself rather than in
    /// `io_uring_enter` (counted in `waits` too).
    parked_waits,
    /// uring with `spin_us`: light-load waits whose spin found work (a
    /// sleep and its wake-up saved).
    spin_hits,
    /// uring with `spin_us`: spins whose window passed with nothing (the
    /// worker then slept).
    spin_misses,
    /// uring with `spin_us`: times a worker stopped spinning for a while
    /// because the scheduler had preempted it (its CPU is shared).
    spin_yields,
    /// Completions or messages that could not be used (counted, dropped).
    invalid_completions,
    /// Refused by the guard: source port 0 or a source no host sends from
    /// (unspecified, multicast, broadcast).
    guard_bad_source,
    /// Refused by the guard: sent by another udpring server (it arrived
    /// with the server mark, a TTL of 160..=200): answering it could
    /// close a loop between two servers.
    guard_marked,
    /// Refused by the guard: the source is this engine itself (one of its
    /// ports on one of this host's addresses): a forged loop.
    guard_loop,
    /// Refused by the guard: sent to a broadcast address.
    guard_broadcast,
    /// Refused by the guard: from the port of a service that answers
    /// everything (echo, DNS, NTP, ...).
    guard_port,
    /// Refused by the guard: a source outside the allowlist.
    guard_not_allowed,
    /// Refused by the guard: a source over its rate.
    guard_rate,
    /// Sources the rate limiter stopped tracking to make room for others.
    guard_evictions,
    /// xdp: frames received through the XDP socket (each one datagram).
    xdp_rx,
    /// xdp: frames sent through the XDP socket (each one datagram).
    xdp_tx,
    /// xdp: frames dropped that were not plain UDP, whose lengths did not
    /// agree, or that were addressed to another host's MAC.
    xdp_bad_frames,
    /// xdp: frames dropped for a bad IPv4 header or UDP checksum.
    xdp_bad_checksums,
    /// xdp: frames taken with a partial checksum (the sender left it to a
    /// veth's offload; see `udpring::frame`).
    xdp_csum_partial,
    /// xdp: datagrams sent through the ordinary socket instead: the kernel
    /// had no MAC address for the next hop yet, the route left by another
    /// interface, or the frame was longer than the MTU.
    xdp_tx_via_socket,
    /// xdp: sends copied into a slot of their own first (the slot was
    /// also another send's, or had no room for the headers).
    xdp_tx_copies,
    /// xdp, the kernel's count (`XDP_STATISTICS`): frames dropped for other
    /// reasons than a full ring (e.g. longer than a chunk).
    xdp_rx_dropped,
    /// xdp, the kernel's count: frames dropped because the RX ring was full.
    xdp_rx_ring_full,
    /// xdp, the kernel's count: times a frame found no free chunk on the
    /// fill ring.
    xdp_fill_ring_empty,
    /// xdp, the kernel's count: TX descriptors it refused.
    xdp_tx_invalid,
}

/// One counter: bumped by one thread, read by any. A bump is a relaxed
/// load and store, not an atomic read-modify-write: as cheap as a plain
/// `+=`, and right because only the worker that owns the counter bumps it
/// (its [`LocalStats`] is not shared); a reader sees each value whole.
#[derive(Debug, Default)]
pub(crate) struct Count(AtomicU64);

impl Count {
    /// Adds `n` (only the owning worker calls this). Adding 0 touches
    /// nothing: a store would dirty a line that a request whose counts did
    /// not move need not touch (`truncated`, `guard_evictions`, ...).
    #[inline]
    pub fn add(&self, n: u64) {
        if n != 0 {
            self.0.store(
                self.0.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }

    /// Sets the counter to a count kept elsewhere (the kernel's).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters a worker shares with the engine: the list above, the slot
/// gauges, the GSO flag and the per-errno send failures.
pub(crate) struct SharedStats {
    counters: Arc<SharedCounters>,
    slots_total: AtomicU64,
    slots_out: AtomicU64,
    gso_disabled: AtomicBool,
    send_errors: [AtomicU64; MAX_ERRNO + 1],
}

/// A worker's own view: its counters (the shared ones themselves, which it
/// alone bumps) and failed sends by errno, published to [`SharedStats`]
/// when they change.
pub(crate) struct LocalStats {
    pub c: Arc<SharedCounters>,
    send_errors: [u64; MAX_ERRNO + 1],
    /// A send error was counted since the last publish.
    send_errors_dirty: bool,
}

impl LocalStats {
    /// The writer of `shared`'s counters: one per worker.
    pub fn new(shared: &SharedStats) -> Self {
        LocalStats {
            c: Arc::clone(&shared.counters),
            send_errors: [0; MAX_ERRNO + 1],
            send_errors_dirty: false,
        }
    }

    /// All failed sends so far.
    #[cfg(test)]
    pub fn send_errors_total(&self) -> u64 {
        self.send_errors.iter().sum()
    }

    /// Counts one failed send under its errno.
    pub fn send_error(&mut self, errno: i32) {
        self.send_errors_n(errno, 1);
    }

    /// Counts `n` datagrams whose send failed with `errno` (a GSO train's
    /// segments, each).
    pub fn send_errors_n(&mut self, errno: i32, n: u64) {
        let i = (errno.max(0) as usize).min(MAX_ERRNO);
        self.send_errors[i] += n;
        self.send_errors_dirty = true;
    }
}

impl SharedStats {
    pub fn new() -> Self {
        SharedStats {
            counters: Arc::default(),
            slots_total: AtomicU64::new(0),
            slots_out: AtomicU64::new(0),
            gso_disabled: AtomicBool::new(false),
            send_errors: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Copies out what a worker keeps to itself: its pool's gauges and,
    /// when they changed, its send failures by errno (the counters are
    /// shared as they are bumped).
    pub fn publish(&self, l: &mut LocalStats, slots_total: u32, slots_out: u32) {
        self.slots_total
            .store(u64::from(slots_total), Ordering::Relaxed);
        self.slots_out
            .store(u64::from(slots_out), Ordering::Relaxed);
        // The per-errno table only when it changed: it is 135 entries.
        if l.send_errors_dirty {
            for (a, v) in self.send_errors.iter().zip(l.send_errors.iter()) {
                if *v != 0 {
                    a.store(*v, Ordering::Relaxed);
                }
            }
            l.send_errors_dirty = false;
        }
    }

    pub fn set_gso_disabled(&self) {
        self.gso_disabled.store(true, Ordering::Relaxed);
    }

    /// A snapshot, for any thread.
    pub fn load(&self) -> Stats {
        let mut s = Stats {
            slots_total: self.slots_total.load(Ordering::Relaxed),
            slots_out: self.slots_out.load(Ordering::Relaxed),
            gso_disabled: self.gso_disabled.load(Ordering::Relaxed),
            send_errors: self
                .send_errors
                .iter()
                .enumerate()
                .filter_map(|(e, a)| {
                    let v = a.load(Ordering::Relaxed);
                    (v > 0).then_some((e as i32, v))
                })
                .collect(),
            ..Stats::default()
        };
        s.set_counters(&self.counters.load());
        s
    }
}

impl Stats {
    /// Adds another worker's counters to these (saturating).
    pub fn merge(&mut self, o: &Stats) {
        self.add_counters(o);
        self.slots_total += o.slots_total;
        self.slots_out += o.slots_out;
        self.gso_disabled |= o.gso_disabled;
        for &(e, v) in &o.send_errors {
            match self.send_errors.iter_mut().find(|(x, _)| *x == e) {
                Some((_, c)) => *c = c.saturating_add(v),
                None => self.send_errors.push((e, v)),
            }
        }
        self.send_errors.sort_unstable();
    }

    /// All failed sends.
    pub fn send_errors_total(&self) -> u64 {
        self.send_errors.iter().map(|(_, v)| v).sum()
    }

    /// Failed sends as `EAGAIN=3 ENOBUFS=1`, or `none`.
    pub fn send_errors_text(&self) -> String {
        if self.send_errors.is_empty() {
            return "none".into();
        }
        self.send_errors
            .iter()
            .map(|(e, v)| format!("{}={v}", errno_name(*e)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The errno's symbolic name (`ECONNREFUSED`), or `errnoN` for a number
/// the C library does not name.
pub fn errno_name(e: i32) -> String {
    match nix::errno::Errno::from_raw(e) {
        nix::errno::Errno::UnknownErrno => format!("errno{e}"),
        known => format!("{known:?}"),
    }
}

/// Serializes `(errno, count)` pairs as `{"ECONNREFUSED": count, ...}`: the
/// shape every udpring JSON document gives errors.
#[cfg(feature = "serde")]
fn errno_counts<S: serde::Serializer>(v: &[(i32, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|&(e, n)| (errno_name(e), n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_load_and_merge_cover_every_counter() {
        let shared = SharedStats::new();
        let mut l = LocalStats::new(&shared);
        // A distinct value per counter, through the generated list, bumped
        // by the worker's side and read from the shared one.
        let mut s = Stats::default();
        let n = Stats::COUNTERS.len();
        assert_eq!(s.counters().count(), n);
        l.c.bump_numbered();
        l.send_error(libc::EAGAIN);
        l.send_error(9999);
        shared.publish(&mut l, 12, 3);
        let a = shared.load();
        let values: Vec<u64> = a.counters().map(|(_, v)| v).collect();
        assert_eq!(values, (1..=n as u64).collect::<Vec<_>>());
        assert_eq!((a.slots_total, a.slots_out), (12, 3));
        assert_eq!(
            a.send_errors,
            vec![(libc::EAGAIN, 1), (MAX_ERRNO as i32, 1)]
        );
        s.merge(&a);
        s.merge(&a);
        assert_eq!(s.received, 2);
        assert_eq!(s.xdp_tx_invalid, 2 * n as u64, "the last counter");
        assert_eq!(s.send_errors_total(), 4);
        let mut big = Stats {
            sent: u64::MAX,
            ..Stats::default()
        };
        big.merge(&a);
        assert_eq!(big.sent, u64::MAX, "merging saturates");
    }
}
