//! A request/response client over UDP: the seed chapter's pattern.
//!
//! Each request carries an unpredictable ID (the run's random token plus a
//! sequence number, in a [`Header`]); a reply counts only if it carries the
//! same ID *and* comes from the server's address, so stray, stale or forged
//! datagrams are discarded (and counted). For a service that is not an echo
//! server, a request is the caller's bytes ([`Form::Payload`]), with an ID
//! of the client's written into them where the service copies it back, or
//! none: then any datagram from the server's address while the request
//! waits answers it, as the chapter's client on a connected socket takes
//! it. Unanswered requests are sent
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
        /// The reply lacked the bytes the client expects
        /// ([`RequestClient::expect`]): the reply's first bytes, shown.
        unexpected: Option<String>,
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

/// What a request carries and how its reply is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Form {
    /// udpring's header (the run's token and the request's sequence
    /// number) in `size` bytes: an echo server returns it.
    Header {
        /// Request size in bytes (at least the header's).
        size: usize,
    },
    /// The caller's bytes, for a service that is not an echo server. With
    /// `id` `Some((offset, len))` each request carries the low `len` bytes
    /// of its sequence number at `offset` (big-endian, as `load --match
    /// id`), and a reply answers it when it carries the same bytes there;
    /// with `None` any datagram from the server while the request waits
    /// answers it (`--match flow`).
    Payload {
        /// The request's bytes (the ID's place overwritten per request).
        bytes: Vec<u8>,
        /// Where the ID is: byte offset and length (1..=8).
        id: Option<(usize, usize)>,
    },
}

impl Form {
    /// The request with sequence number `seq`.
    fn request(&self, token: u64, seq: u64) -> Vec<u8> {
        match self {
            Form::Header { size } => {
                let mut msg = vec![0x51u8; *size];
                Header::new_unchecked(&mut msg[..]).fill(token, 0, seq, 0);
                msg
            }
            Form::Payload { bytes, id } => {
                let mut msg = bytes.clone();
                if let Some((o, l)) = *id {
                    msg[o..o + l].copy_from_slice(&seq.to_be_bytes()[8 - l..]);
                }
                msg
            }
        }
    }

    /// Whether `reply` answers `request` (number `seq`): `Ok`, or the count
    /// it goes to instead.
    fn answers(
        &self,
        reply: &[u8],
        request: &[u8],
        token: u64,
        seq: u64,
    ) -> Result<(), fn(&mut ClientStats) -> &mut u64> {
        match self {
            Form::Header { .. } => match Header::new_checked(reply) {
                Ok(h) if h.token() == token && h.seq() == seq => Ok(()),
                Ok(_) => Err(|s| &mut s.wrong_id),
                Err(_) => Err(|s| &mut s.malformed),
            },
            Form::Payload { id: None, .. } => Ok(()),
            Form::Payload {
                id: Some((o, l)), ..
            } => match reply.get(*o..o + l) {
                Some(x) if x == &request[*o..o + l] => Ok(()),
                Some(_) => Err(|s| &mut s.wrong_id),
                None => Err(|s| &mut s.malformed),
            },
        }
    }

    /// How the request numbered `seq` is named in what is printed: its ID
    /// on the wire, or, with no ID, the sequence number.
    pub fn label(&self, seq: u64) -> String {
        match self {
            Form::Header { .. } => format!("id {seq:#x}"),
            Form::Payload {
                id: Some((_, l)), ..
            } => {
                let mask = if *l == 8 {
                    u64::MAX
                } else {
                    (1u64 << (8 * l)) - 1
                };
                format!("id {:#x}", seq & mask)
            }
            Form::Payload { id: None, .. } => format!("request {seq}"),
        }
    }
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
    /// Replies without the expected bytes (`--expect`): still replies,
    /// and counted here too.
    pub unexpected: u64,
}

/// The client.
pub struct RequestClient {
    sock: UdpSocket,
    server: SocketAddr,
    backoff: Backoff,
    token: u64,
    next_seq: u64,
    form: Form,
    buf: Vec<u8>,
    /// Bytes every reply must carry (`--expect`); one without them is
    /// still the request's reply, counted as `unexpected`.
    pub expect: Vec<crate::apps::load::expect::Expect>,
    /// Counters so far.
    pub stats: ClientStats,
}

impl RequestClient {
    /// A client for `server`, sending `size`-byte requests (at least the
    /// 32-byte header), from an unconnected socket so that datagrams from
    /// other addresses are seen and counted.
    pub fn new(server: SocketAddr, backoff: Backoff, size: usize) -> io::Result<Self> {
        Self::with_form(server, backoff, Form::Header { size })
    }

    /// A client for `server` whose requests take `form`.
    pub fn with_form(server: SocketAddr, backoff: Backoff, form: Form) -> io::Result<Self> {
        let refuse = |msg: String| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if backoff.attempts == 0 {
            return refuse("attempts must be at least 1".into());
        }
        // What one datagram carries over the server's family (IPv6 has no
        // IPv4 header to fit in the 64 KiB).
        let max = if udpring::os::canonical(server).is_ipv6() {
            udpring::MAX_UDP6_PAYLOAD
        } else {
            udpring::MAX_UDP_PAYLOAD
        };
        match &form {
            Form::Header { size } if !(HEADER_LEN..=max).contains(size) => {
                return refuse(format!("size must be {HEADER_LEN}..{max} to {server}"));
            }
            Form::Payload { bytes, .. } if bytes.len() > max => {
                return refuse(format!(
                    "a payload of {} bytes is over the {max} a UDP datagram carries to {server}",
                    bytes.len()
                ));
            }
            Form::Payload {
                bytes,
                id: Some((o, l)),
            } if !(1..=8).contains(l) || o.saturating_add(*l) > bytes.len() => {
                return refuse(format!(
                    "an ID of {l} bytes at offset {o} does not fit a {}-byte payload (1..8 \
                     bytes, inside it)",
                    bytes.len()
                ));
            }
            _ => {}
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
            // Counted from 1 where no ID goes on the wire (nothing to
            // guess), else from a random point.
            next_seq: match form {
                Form::Payload { id: None, .. } => 1,
                _ => udpring::random_u64() & 0xffff_ffff,
            },
            form,
            buf: vec![0; 65536],
            expect: Vec::new(),
            stats: ClientStats::default(),
        })
    }

    /// What the requests carry.
    pub fn form(&self) -> &Form {
        &self.form
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
        let msg = self.form.request(self.token, seq);
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
                match self.form.answers(&self.buf[..n], &msg, self.token, seq) {
                    Ok(()) => {
                        self.stats.replies += 1;
                        // An echo returns the request whole; a service's
                        // answer has a length of its own.
                        if matches!(self.form, Form::Header { .. }) && n < msg.len() {
                            self.stats.truncated += 1;
                        }
                        let rtt = sent_at.elapsed();
                        let reply = &self.buf[..n];
                        let unexpected = (!self.expect.iter().all(|e| e.holds(reply)))
                            .then(|| crate::apps::load::expect::shown(reply));
                        self.stats.unexpected += u64::from(unexpected.is_some());
                        return Ok(Outcome::Reply {
                            seq,
                            rtt,
                            attempts: attempt as u32 + 1,
                            len: n,
                            unexpected,
                        });
                    }
                    Err(count) => *count(&mut self.stats) += 1,
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
    fn a_payloads_id_is_written_per_request_and_read_back_where_it_was_put() {
        let form = Form::Payload {
            bytes: b"GET key".to_vec(),
            id: Some((1, 2)),
        };
        let req = form.request(0, 0x1_0203);
        assert_eq!(req, b"G\x02\x03 key", "the low 2 bytes, big-endian, at 1");
        assert_eq!(form.label(0x1_0203), "id 0x203");
        let seq = 0x1_0203;
        assert!(form.answers(b"?\x02\x03 value", &req, 0, seq).is_ok());
        let mut s = ClientStats::default();
        *form.answers(b"?\x02\x04 value", &req, 0, seq).unwrap_err()(&mut s) += 1;
        *form.answers(b"?\x02", &req, 0, seq).unwrap_err()(&mut s) += 1;
        assert_eq!((s.wrong_id, s.malformed), (1, 1));
        // No ID: whatever the server sends answers; the bytes go as given.
        let flow = Form::Payload {
            bytes: b"hello".to_vec(),
            id: None,
        };
        assert_eq!(flow.request(9, 7), b"hello");
        assert!(flow.answers(b"", b"hello", 9, 7).is_ok());
        assert_eq!(flow.label(7), "request 7");
        // udpring's header: the token and the sequence number.
        let h = Form::Header { size: 40 };
        let req = h.request(5, 6);
        assert_eq!(req.len(), 40);
        assert!(h.answers(&req, &req, 5, 6).is_ok());
        assert!(h.answers(&h.request(5, 7), &req, 5, 6).is_err());
    }

    #[test]
    fn an_id_outside_the_payload_is_refused() {
        let server: SocketAddr = "127.0.0.1:9".parse().unwrap();
        for (len, id) in [(4, Some((3, 2))), (4, Some((0, 9))), (4, Some((0, 0)))] {
            let form = Form::Payload {
                bytes: vec![0; len],
                id,
            };
            let e = RequestClient::with_form(server, Backoff::default(), form).err();
            assert!(
                e.is_some_and(|e| e.to_string().contains("does not fit")),
                "{id:?}"
            );
        }
        let fits = Form::Payload {
            bytes: vec![0; 4],
            id: Some((2, 2)),
        };
        assert!(RequestClient::with_form(server, Backoff::default(), fits).is_ok());
    }

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
