//! Counters of a worker, or of all workers added up.

use std::sync::atomic::Ordering;

use crate::worker::{MAX_ERRNO, SharedStats};

/// A snapshot of a worker's counters (or their sum).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Datagrams received (each segment of a GRO train counts).
    pub received: u64,
    /// Datagrams sent (each segment of a GSO train counts).
    pub sent: u64,
    /// Payload bytes received.
    pub bytes_received: u64,
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// Datagrams larger than a slot, delivered cut.
    pub truncated: u64,
    /// Times the buffer ring ran empty (`ENOBUFS`); the datagrams waited in
    /// the socket and were received after the ring was refilled.
    pub enobufs: u64,
    /// Datagrams the kernel dropped because the socket buffer was full
    /// (`SO_RXQ_OVFL`), as of the last datagram received.
    pub kernel_drops: u64,
    /// `send_to` calls refused because every send slot was in flight.
    pub send_exhausted: u64,
    /// Error events handed to the handler.
    pub error_events: u64,
    /// Times the receive was armed (1 + re-arms after ENOBUFS or errors).
    pub recv_arms: u64,
    /// Completions or messages that could not be used (counted, dropped).
    pub invalid_completions: u64,
    /// Slots in the pools.
    pub slots_total: u64,
    /// Slots not home (lent or in flight); 0 when idle.
    pub slots_out: u64,
    /// GSO was turned off after the kernel refused it.
    pub gso_disabled: bool,
    /// Failed sends by errno: `(errno, count)`.
    pub send_errors: Vec<(i32, u64)>,
}

impl Stats {
    pub(crate) fn load(s: &SharedStats) -> Self {
        let r = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            received: r(&s.received),
            sent: r(&s.sent),
            bytes_received: r(&s.bytes_received),
            bytes_sent: r(&s.bytes_sent),
            truncated: r(&s.truncated),
            enobufs: r(&s.enobufs),
            kernel_drops: r(&s.kernel_drops),
            send_exhausted: r(&s.send_exhausted),
            error_events: r(&s.error_events),
            recv_arms: r(&s.recv_arms),
            invalid_completions: r(&s.invalid_completions),
            slots_total: r(&s.slots_total),
            slots_out: r(&s.slots_out),
            gso_disabled: s.gso_disabled.load(Ordering::Relaxed),
            send_errors: s
                .send_errors
                .iter()
                .enumerate()
                .filter_map(|(e, a)| {
                    let v = r(a);
                    (v > 0).then_some((e.min(MAX_ERRNO) as i32, v))
                })
                .collect(),
        }
    }

    /// Adds another worker's counters to these.
    pub fn merge(&mut self, o: &Stats) {
        self.received += o.received;
        self.sent += o.sent;
        self.bytes_received += o.bytes_received;
        self.bytes_sent += o.bytes_sent;
        self.truncated += o.truncated;
        self.enobufs += o.enobufs;
        self.kernel_drops += o.kernel_drops;
        self.send_exhausted += o.send_exhausted;
        self.error_events += o.error_events;
        self.recv_arms += o.recv_arms;
        self.invalid_completions += o.invalid_completions;
        self.slots_total += o.slots_total;
        self.slots_out += o.slots_out;
        self.gso_disabled |= o.gso_disabled;
        for &(e, v) in &o.send_errors {
            match self.send_errors.iter_mut().find(|(x, _)| *x == e) {
                Some((_, c)) => *c += v,
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

/// A short name for common errnos, the number otherwise.
pub fn errno_name(e: i32) -> String {
    match e {
        libc::EAGAIN => "EAGAIN".into(),
        libc::ENOBUFS => "ENOBUFS".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::EMSGSIZE => "EMSGSIZE".into(),
        libc::EHOSTUNREACH => "EHOSTUNREACH".into(),
        libc::ENETUNREACH => "ENETUNREACH".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::EIO => "EIO".into(),
        libc::EPERM => "EPERM".into(),
        libc::EACCES => "EACCES".into(),
        n => format!("errno{n}"),
    }
}
