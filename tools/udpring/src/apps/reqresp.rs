//! A request/response client over UDP: the seed chapter's pattern.
//!
//! Each request carries an unpredictable ID (the run's random token plus a
//! sequence number, in a [`Header`]); a reply counts only if it carries the
//! same ID *and* comes from the server's address, so stray, stale or forged
//! datagrams are discarded (and counted). Unanswered requests are sent
//! again after a delay that grows by a factor up to a cap (exponential
//! backoff); after the last attempt the server "looks down". An ICMP
//! error about the request from the server's address (port or host
//! unreachable, read from the socket's error queue: it quotes our own
//! datagram) ends the request at once as unreachable.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use udpring::ErrorEvent;

use crate::apps::header::{HEADER_LEN, Header};

/// Retransmission schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Wait after the first send.
    pub initial: Duration,
    /// Each wait is the previous one times this (at least 1).
    pub factor: f64,
    /// No wait is longer than this.
    pub max: Duration,
    /// Sends in all (the first one included) before giving up.
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            factor: 2.0,
            max: Duration::from_secs(2),
            attempts: 5,
        }
    }
}

impl Backoff {
    /// The wait after each attempt, in order.
    pub fn delays(&self) -> Vec<Duration> {
        let mut d = self.initial.min(self.max);
        let mut v = Vec::with_capacity(self.attempts as usize);
        for _ in 0..self.attempts {
            v.push(d);
            d = d.mul_f64(self.factor.max(1.0)).min(self.max);
        }
        v
    }

    /// The longest a request can take before the server looks down.
    pub fn total(&self) -> Duration {
        self.delays().iter().sum()
    }
}

/// What happened to one request.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A reply with the right ID from the server.
    Reply {
        /// The request's sequence number.
        seq: u64,
        /// From the last send of the request to the reply.
        rtt: Duration,
        /// Sends it took (1 = no retransmission).
        attempts: u32,
        /// Reply payload length.
        len: usize,
    },
    /// No valid reply after every attempt.
    ServerDown {
        /// The request's sequence number.
        seq: u64,
        /// Sends made.
        attempts: u32,
        /// Time waited in all.
        waited: Duration,
    },
    /// An ICMP error about the request came back from the server's
    /// address: port unreachable (nothing listens there) or host/network
    /// unreachable.
    Unreachable {
        /// The request's sequence number.
        seq: u64,
        /// Sends made.
        attempts: u32,
        /// What the kernel reported.
        error: ErrorEvent,
    },
    /// A stop was asked for (SIGINT, SIGTERM, SIGHUP) while waiting.
    Stopped {
        /// The request's sequence number.
        seq: u64,
    },
}

/// Counters of a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ClientStats {
    /// Requests made.
    pub requests: u64,
    /// Datagrams sent (requests and retransmissions).
    pub sent: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Valid replies.
    pub replies: u64,
    /// Requests given up on.
    pub down: u64,
    /// Requests ended by an ICMP error from the server's address.
    pub unreachable: u64,
    /// Datagrams from the server with an ID that is not the one awaited
    /// (stale replies to earlier attempts included): `unmatched`, as in
    /// `load`.
    #[serde(rename = "unmatched")]
    pub wrong_id: u64,
    /// Datagrams from any other address: `foreign`, as in `load`.
    #[serde(rename = "foreign")]
    pub wrong_addr: u64,
    /// Datagrams too short or not in the request format: `invalid`, as in
    /// `load`.
    #[serde(rename = "invalid")]
    pub malformed: u64,
    /// Replies shorter than the request (cut by the server's buffer or on
    /// the way): still replies, and counted here too.
    pub truncated: u64,
}

/// The client.
pub struct RequestClient {
    sock: UdpSocket,
    server: SocketAddr,
    backoff: Backoff,
    token: u64,
    next_seq: u64,
    size: usize,
    buf: Vec<u8>,
    /// Counters so far.
    pub stats: ClientStats,
}

impl RequestClient {
    /// A client for `server`, sending `size`-byte requests (at least the
    /// 32-byte header), from an unconnected socket so that datagrams from
    /// other addresses are seen and counted.
    pub fn new(server: SocketAddr, backoff: Backoff, size: usize) -> io::Result<Self> {
        if backoff.attempts == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "attempts must be at least 1",
            ));
        }
        if !(HEADER_LEN..=udpring::MAX_UDP_PAYLOAD).contains(&size) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("size must be {HEADER_LEN}..{}", udpring::MAX_UDP_PAYLOAD),
            ));
        }
        let sock = UdpSocket::bind(udpring::os::unspecified_like(server, 0))?;
        // ICMP errors about our requests into the error queue (with the
        // address the refused datagram went to), also on this unconnected
        // socket.
        udpring::os::set_recv_errors(&sock, server.is_ipv6())?;
        // From the kernel's random pool: IDs a stranger cannot guess.
        let z = udpring::random_u64();
        Ok(RequestClient {
            sock,
            server: udpring::os::canonical(server),
            backoff,
            token: z,
            next_seq: udpring::random_u64() & 0xffff_ffff,
            size,
            buf: vec![0; 65536],
            stats: ClientStats::default(),
        })
    }

    /// The local address requests leave from.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.sock.local_addr()
    }

    /// Reads the error queue; returns the last ICMP error about a datagram
    /// sent to the server (others, about other addresses, are dropped).
    fn icmp_from_server(&mut self) -> Option<ErrorEvent> {
        let mut found = None;
        // Bounded: the queue holds what the socket's buffer admits, and
        // each read takes one entry off it.
        while let Some(e) = udpring::os::read_error(&self.sock) {
            let peer = match e {
                ErrorEvent::ConnectionRefused { peer } | ErrorEvent::Unreachable { peer, .. } => {
                    peer
                }
                _ => continue,
            };
            if peer.map(udpring::os::canonical) == Some(self.server) {
                found = Some(e);
            }
        }
        found
    }

    /// Sends one request and waits for its reply, retransmitting on the
    /// backoff schedule.
    pub fn request(&mut self) -> io::Result<Outcome> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.stats.requests += 1;
        let mut msg = vec![0x51u8; self.size];
        Header::new_unchecked(&mut msg[..]).fill(self.token, 0, seq, 0);
        let start = Instant::now();
        for (attempt, delay) in self.backoff.delays().into_iter().enumerate() {
            if attempt > 0 {
                self.stats.retransmits += 1;
            }
            let sent_at = Instant::now();
            self.sock.send_to(&msg, self.server).map_err(|e| {
                let e = udpring::os::explain_unreachable(self.server, e);
                io::Error::new(e.kind(), format!("send to {}: {e}", self.server))
            })?;
            self.stats.sent += 1;
            let deadline = sent_at + delay;
            loop {
                if udpring::signals::requested() {
                    return Ok(Outcome::Stopped { seq });
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.sock.set_read_timeout(Some(left))?;
                let (n, from) = match self.sock.recv_from(&mut self.buf) {
                    Ok(r) => r,
                    // A timeout, or a signal (checked at the top).
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        continue;
                    }
                    // The kernel flags a queued ICMP error on the next
                    // receive; the queue says which address it was about.
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(
                                libc::ECONNREFUSED
                                    | libc::EHOSTUNREACH
                                    | libc::ENETUNREACH
                                    | libc::EHOSTDOWN
                                    | libc::EMSGSIZE
                                    | libc::EPROTO
                            )
                        ) =>
                    {
                        if let Some(error) = self.icmp_from_server() {
                            self.stats.unreachable += 1;
                            return Ok(Outcome::Unreachable {
                                seq,
                                attempts: attempt as u32 + 1,
                                error,
                            });
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if udpring::os::canonical(from) != self.server {
                    self.stats.wrong_addr += 1;
                    continue;
                }
                match Header::new_checked(&self.buf[..n]) {
                    Ok(h) if h.token() == self.token && h.seq() == seq => {
                        self.stats.replies += 1;
                        if n < self.size {
                            self.stats.truncated += 1;
                        }
                        return Ok(Outcome::Reply {
                            seq,
                            rtt: sent_at.elapsed(),
                            attempts: attempt as u32 + 1,
                            len: n,
                        });
                    }
                    Ok(_) => self.stats.wrong_id += 1,
                    Err(_) => self.stats.malformed += 1,
                }
            }
        }
        self.stats.down += 1;
        Ok(Outcome::ServerDown {
            seq,
            attempts: self.backoff.attempts,
            waited: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_factor_up_to_the_cap() {
        let b = Backoff {
            initial: Duration::from_millis(10),
            factor: 2.0,
            max: Duration::from_millis(50),
            attempts: 6,
        };
        let ms: Vec<u128> = b.delays().iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [10, 20, 40, 50, 50, 50]);
        assert_eq!(b.total(), Duration::from_millis(220));
        let flat = Backoff { factor: 0.5, ..b };
        assert!(
            flat.delays()
                .iter()
                .all(|d| *d == Duration::from_millis(10)),
            "factor below 1 acts as 1"
        );
    }
}
