//! Loading services that are not echo servers: payloads laid out once,
//! and replies matched to requests by an ID the service copies back (DNS,
//! memcached's UDP frame), by flow, or not at all.
//!
//! # IDs and their reuse
//!
//! With `Match::Id`, request `seq` of a flow carries `seq mod 2^(8 LEN)` at
//! `OFFSET` (big-endian). The flow remembers its last [`RING`] requests
//! (`seq`, send time, answered) in a ring indexed by `seq mod R`, R the
//! smaller of [`RING`] and the ID space. A reply's ID names the newest
//! request sent with it; the reply is credited only if that request is still
//! in the ring and unanswered: a second reply is a duplicate, a reply to a
//! request that left the ring is stale, and bytes that name no request are
//! unmatched.
//!
//! A flow sends request `seq` only once the ring's slot is free: its
//! previous holder (`seq - R`) was answered, or was sent at least
//! `--timeout` ago (then it counts as timed out). So an ID is reused only
//! after its request was answered or timed out, and never within 2^(8 LEN)
//! requests of the flow. What this cannot tell apart: a reply later than
//! its request's timeout arriving after its ID was reused is credited to
//! the newer request; with 16-bit IDs that needs 65536 requests on the
//! flow in between. Flows have ID spaces of their own (each is a socket of
//! its own), so flows never confuse each other's replies.

/// How replies are matched to requests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Match {
    /// udpring's header, echoed back (an echo server).
    #[default]
    Header,
    /// An ID of `len` bytes (1..=8) at `offset`, copied back by the
    /// service at the same offset.
    Id {
        /// Byte offset of the ID in request and reply.
        offset: usize,
        /// Its length in bytes.
        len: usize,
    },
    /// One request in flight per flow; any reply from the target on that
    /// flow's socket answers it.
    Flow,
    /// One-way: nothing is expected back.
    None,
}

impl Match {
    /// Parses `header`, `none`, `flow` or `id:OFFSET:LEN`.
    pub fn parse(s: &str) -> Result<Match, String> {
        match s {
            "header" => return Ok(Match::Header),
            "none" => return Ok(Match::None),
            "flow" => return Ok(Match::Flow),
            _ => {}
        }
        let bad = || format!("--match {s}: give header, none, flow or id:OFFSET:LEN (e.g. id:0:2)");
        let mut it = s.strip_prefix("id:").ok_or_else(bad)?.split(':');
        let (Some(o), Some(l), None) = (it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        let offset: usize = o.parse().map_err(|_| bad())?;
        let len: usize = l.parse().map_err(|_| bad())?;
        if !(1..=8).contains(&len) {
            return Err(format!("--match {s}: an ID is 1..8 bytes"));
        }
        if offset > 65_000 {
            return Err(format!("--match {s}: offset {offset} is past any datagram"));
        }
        Ok(Match::Id { offset, len })
    }

    /// Its name in results: `header`, `none`, `flow`, `id:O:L`.
    pub fn name(&self) -> String {
        match self {
            Match::Header => "header".into(),
            Match::None => "none".into(),
            Match::Flow => "flow".into(),
            Match::Id { offset, len } => format!("id:{offset}:{len}"),
        }
    }
}

/// Requests remembered per flow with ID matching, at least (IDs of 12 bits
/// or more).
pub const RING: usize = 4096;

/// Requests remembered with ID matching, all flows of a worker together,
/// at most (24 bytes each: 24 MiB).
pub const MAX_REMEMBERED: usize = 1 << 20;

/// Every payload, laid out once in one buffer: nothing is parsed or
/// allocated per datagram.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Payloads {
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
    /// A capture's timing: each payload's time from the first, in ns
    /// (never decreasing), and the length of one pass.
    times: Option<(Vec<u64>, u64)>,
}

/// Most payloads one run takes.
pub const MAX_PAYLOADS: usize = 1_000_000;
/// Most bytes all payloads together take.
pub const MAX_PAYLOAD_BYTES: usize = 256 << 20;

impl Payloads {
    /// From a list of datagrams; each must be 1..=65507 bytes.
    pub fn new(list: impl IntoIterator<Item = Vec<u8>>) -> Result<Payloads, String> {
        let mut p = Payloads::default();
        for (i, d) in list.into_iter().enumerate() {
            if d.is_empty() || d.len() > udpring::MAX_UDP_PAYLOAD {
                return Err(format!(
                    "payload {} is {} bytes: 1..{} fit a datagram",
                    i + 1,
                    d.len(),
                    udpring::MAX_UDP_PAYLOAD
                ));
            }
            if p.spans.len() >= MAX_PAYLOADS || p.buf.len() + d.len() > MAX_PAYLOAD_BYTES {
                return Err(format!(
                    "more than {MAX_PAYLOADS} payloads or {} MiB",
                    MAX_PAYLOAD_BYTES >> 20
                ));
            }
            p.spans.push((p.buf.len(), d.len()));
            p.buf.extend_from_slice(&d);
        }
        if p.spans.is_empty() {
            return Err("no payload: the source is empty".into());
        }
        Ok(p)
    }

    /// With a capture's timing: `times[i]` is payload `i`'s capture time
    /// in ns (any origin; out-of-order times are taken as simultaneous).
    /// One pass lasts from the first to the last plus the mean gap, so a
    /// replay that cycles keeps the capture's rate.
    pub fn with_times(mut self, times: &[u64]) -> Result<Payloads, String> {
        if times.len() != self.spans.len() {
            return Err("one time per payload".into());
        }
        let t0 = times[0];
        let mut last = 0;
        let rel: Vec<u64> = times
            .iter()
            .map(|&t| {
                last = t.saturating_sub(t0).max(last);
                last
            })
            .collect();
        let n = rel.len() as u64;
        let cycle = last + if n > 1 { last / (n - 1) } else { 1_000_000 };
        self.times = Some((rel, cycle.max(1)));
        Ok(self)
    }

    /// Generator `i` of `n`'s share (`load --shard I/N`): payloads `i`,
    /// `i + n`, `i + 2n`, ... (with their times); `None` when that leaves
    /// none.
    pub fn shard(&self, i: usize, n: usize) -> Option<Payloads> {
        let keep: Vec<usize> = (i..self.spans.len()).step_by(n.max(1)).collect();
        if keep.is_empty() {
            return None;
        }
        let p = Payloads::new(keep.iter().map(|&k| {
            let (s, l) = self.spans[k];
            self.buf[s..s + l].to_vec()
        }))
        .ok()?;
        match &self.times {
            Some((t, _)) => p
                .with_times(&keep.iter().map(|&k| t[k]).collect::<Vec<_>>())
                .ok(),
            None => Some(p),
        }
    }

    /// The capture's timing, if any: offsets and the length of one pass.
    pub fn times(&self) -> Option<(&[u64], u64)> {
        self.times.as_ref().map(|(t, c)| (&t[..], *c))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Never: [`Payloads::new`] refuses an empty list.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Payload `i mod len()`.
    pub fn get(&self, i: u64) -> &[u8] {
        let (s, l) = self.spans[(i % self.spans.len() as u64) as usize];
        &self.buf[s..s + l]
    }

    /// The shortest and longest.
    pub fn size_range(&self) -> (usize, usize) {
        let mut r = (usize::MAX, 0);
        for &(_, l) in &self.spans {
            r = (r.0.min(l), r.1.max(l));
        }
        r
    }
}

/// One remembered request.
#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    seq: u64,
    sent_ns: u64,
    /// Sent and not yet answered (or written off).
    open: bool,
    /// Ever sent (a slot of the new ring holds nothing).
    used: bool,
}

/// What a reply's ID named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The first reply to request `seq`, sent at `sent_ns`.
    Answer {
        /// The request.
        seq: u64,
        /// When it was sent.
        sent_ns: u64,
    },
    /// Request `seq`, already answered (or written off after its timeout).
    Duplicate {
        /// The request.
        seq: u64,
        /// When it was sent (another responder of a group answers it too).
        sent_ns: u64,
    },
    /// A request no longer remembered, or never sent.
    Stale,
}

/// One flow's requests in flight, by ID.
#[derive(Debug)]
pub struct IdRing {
    slots: Vec<Slot>,
    id_bits: u32,
    /// A group's requests: many responders answer each, so an ID is
    /// reused only after its timeout, answered or not.
    hold: bool,
}

impl IdRing {
    /// For IDs of `len` bytes.
    pub fn new(len: usize) -> IdRing {
        IdRing::with_room(len, RING)
    }

    /// For IDs of `len` bytes, remembering about `want` requests (a paced
    /// flow's rate times the timeout): a power of two from [`RING`] up to
    /// what the IDs can tell apart and [`MAX_REMEMBERED`]; fewer when the
    /// IDs are shorter than 12 bits.
    pub fn with_room(len: usize, want: usize) -> IdRing {
        let id_bits = (8 * len as u32).min(64);
        let ids = if id_bits >= 63 {
            usize::MAX
        } else {
            1usize << id_bits
        };
        let size = want
            .clamp(RING, MAX_REMEMBERED)
            .next_power_of_two()
            .min(MAX_REMEMBERED)
            .min(ids);
        IdRing {
            slots: vec![Slot::default(); size],
            id_bits,
            hold: false,
        }
    }

    /// Writes off the unanswered request in `seq`'s slot before its
    /// timeout, so that `seq` may go now (a paced run keeps its schedule);
    /// true when there was one. A group's ring never does (every
    /// responder's answer must find its request).
    pub fn evict(&mut self, seq: u64) -> bool {
        let i = self.slot(seq);
        let s = &mut self.slots[i];
        let was = s.open && !self.hold;
        if was {
            s.open = false;
        }
        was
    }

    /// For a group's requests: IDs of `len` bytes, each reused only after
    /// its timeout (every responder's answer still finds its request).
    pub fn for_group(len: usize) -> IdRing {
        IdRing {
            hold: true,
            ..IdRing::new(len)
        }
    }

    /// Whether IDs are held until their timeout, answered or not (a group).
    pub fn holds(&self) -> bool {
        self.hold
    }

    fn slot(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    /// Whether request `seq` may go at `now`: its slot's holder was
    /// answered, or is at least `timeout_ns` old. `Some(true)` when that
    /// holder is written off as timed out now (count it), `Some(false)`
    /// when the slot was free, `None` when `seq` must wait.
    pub fn may_send(&mut self, seq: u64, now: u64, timeout_ns: u64) -> Option<bool> {
        let i = self.slot(seq);
        let hold = self.hold;
        let s = &mut self.slots[i];
        if !s.open {
            if hold && s.used && now.saturating_sub(s.sent_ns) < timeout_ns {
                return None;
            }
            return Some(false);
        }
        if now.saturating_sub(s.sent_ns) >= timeout_ns {
            s.open = false;
            return Some(true);
        }
        None
    }

    /// The ID request `seq` carries.
    pub fn id_of(&self, seq: u64) -> u64 {
        if self.id_bits >= 64 {
            seq
        } else {
            seq & ((1u64 << self.id_bits) - 1)
        }
    }

    /// Remembers request `seq`, sent at `sent_ns`.
    pub fn sent(&mut self, seq: u64, sent_ns: u64) {
        let i = self.slot(seq);
        self.slots[i] = Slot {
            seq,
            sent_ns,
            open: true,
            used: true,
        };
    }

    /// The request a reply carrying `id` answers; `next_seq` is the flow's
    /// next, unsent, sequence.
    pub fn find(&mut self, id: u64, next_seq: u64) -> Found {
        // The newest sequence below next_seq whose ID is `id`.
        let seq = if self.id_bits >= 64 {
            id
        } else {
            let m = 1u64 << self.id_bits;
            let base = next_seq.wrapping_sub(1);
            base.wrapping_sub(base.wrapping_sub(id) & (m - 1))
        };
        if seq >= next_seq {
            return Found::Stale;
        }
        let i = self.slot(seq);
        let s = &mut self.slots[i];
        if s.seq != seq {
            return Found::Stale;
        }
        if !s.open {
            return Found::Duplicate {
                seq,
                sent_ns: s.sent_ns,
            };
        }
        s.open = false;
        Found::Answer {
            seq,
            sent_ns: s.sent_ns,
        }
    }
}

/// Writes `id` as `len` big-endian bytes at `offset` of `buf` (which the
/// caller has checked is long enough).
pub fn write_id(buf: &mut [u8], offset: usize, len: usize, id: u64) {
    let b = id.to_be_bytes();
    buf[offset..offset + len].copy_from_slice(&b[8 - len..]);
}

/// Reads the `len`-byte big-endian ID at `offset`; `None` when `buf` is
/// too short.
pub fn read_id(buf: &[u8], offset: usize, len: usize) -> Option<u64> {
    let b = buf.get(offset..offset.checked_add(len)?)?;
    Some(b.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_parses_and_refuses() {
        assert_eq!(Match::parse("id:0:2"), Ok(Match::Id { offset: 0, len: 2 }));
        assert_eq!(Match::parse("flow"), Ok(Match::Flow));
        for bad in ["id:0:0", "id:0:9", "id:x:2", "id:0", "id:0:2:1", "ids", ""] {
            assert!(Match::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Match::Id { offset: 4, len: 2 }.name(), "id:4:2");
    }

    #[test]
    fn ids_round_trip_and_short_replies_have_none() {
        let mut b = [0u8; 6];
        write_id(&mut b, 1, 3, 0x0a0b0c);
        assert_eq!(b, [0, 0x0a, 0x0b, 0x0c, 0, 0]);
        assert_eq!(read_id(&b, 1, 3), Some(0x0a0b0c));
        assert_eq!(read_id(&b, 4, 3), None);
        assert_eq!(read_id(&b, usize::MAX, 3), None);
    }

    #[test]
    fn a_reply_is_credited_once_and_only_to_a_remembered_request() {
        let mut r = IdRing::new(2);
        for seq in 0..10 {
            assert_eq!(r.may_send(seq, 100, 1000), Some(false));
            r.sent(seq, 100 + seq);
        }
        assert_eq!(
            r.find(r.id_of(3), 10),
            Found::Answer {
                seq: 3,
                sent_ns: 103
            }
        );
        assert_eq!(
            r.find(r.id_of(3), 10),
            Found::Duplicate {
                seq: 3,
                sent_ns: 103
            }
        );
        assert_eq!(r.find(r.id_of(12), 10), Found::Stale, "never sent");
    }

    #[test]
    fn a_groups_ids_are_held_until_the_timeout_for_every_responder() {
        let mut r = IdRing::for_group(1);
        // The ring starts empty: nothing to wait for.
        assert_eq!(r.may_send(0, 0, 1000), Some(false));
        for seq in 0..256 {
            r.sent(seq, 0);
        }
        // The first responder's answer, then a second's: both find it.
        assert_eq!(r.find(0, 256), Found::Answer { seq: 0, sent_ns: 0 });
        assert_eq!(r.find(0, 256), Found::Duplicate { seq: 0, sent_ns: 0 });
        // Answered, but held until its timeout: a later responder's answer
        // must not be taken for request 256's.
        assert_eq!(r.may_send(256, 999, 1000), None);
        assert_eq!(r.may_send(256, 1000, 1000), Some(false), "not a timeout");
    }

    #[test]
    fn an_id_is_reused_only_after_an_answer_or_a_timeout() {
        // One-byte IDs: a ring of 256.
        let mut r = IdRing::new(1);
        for seq in 0..256 {
            r.sent(seq, 0);
        }
        // Request 256 reuses request 0's ID: not before its timeout...
        assert_eq!(r.may_send(256, 999, 1000), None);
        // ...unless answered...
        assert_eq!(r.find(0, 256), Found::Answer { seq: 0, sent_ns: 0 });
        assert_eq!(r.may_send(256, 999, 1000), Some(false));
        r.sent(256, 999);
        // ...or timed out (then counted).
        assert_eq!(r.may_send(257, 1000, 1000), Some(true));
        r.sent(257, 1000);
        // A reply with ID 1 now names request 257, not the written-off 1.
        assert_eq!(
            r.find(1, 258),
            Found::Answer {
                seq: 257,
                sent_ns: 1000
            }
        );
        // Request 2, still open, is found by its ID.
        assert_eq!(r.find(2, 258), Found::Answer { seq: 2, sent_ns: 0 });
    }

    #[test]
    fn payloads_cycle_and_refuse_empty_and_oversized() {
        let p = Payloads::new([vec![1, 2], vec![3]]).unwrap();
        assert_eq!(
            (p.get(0), p.get(1), p.get(2)),
            (&[1u8, 2][..], &[3u8][..], &[1u8, 2][..])
        );
        assert_eq!(p.size_range(), (1, 2));
        assert!(Payloads::new(Vec::<Vec<u8>>::new()).is_err());
        assert!(Payloads::new([vec![]]).is_err());
        assert!(Payloads::new([vec![0; 70_000]]).is_err());
    }

    #[test]
    fn a_paced_ring_has_room_for_a_timeout_of_requests_within_its_ids() {
        // 2-byte IDs (DNS) at 20k/s and a 1 s timeout: 25,000 wanted.
        assert_eq!(IdRing::with_room(2, 25_000).slots.len(), 32_768);
        // Never past what the IDs tell apart, nor the bound, nor below RING.
        assert_eq!(IdRing::with_room(2, 1 << 30).slots.len(), 65_536);
        assert_eq!(IdRing::with_room(8, 1 << 30).slots.len(), MAX_REMEMBERED);
        assert_eq!(IdRing::with_room(4, 10).slots.len(), RING);
        assert_eq!(IdRing::with_room(1, 25_000).slots.len(), 256);
    }

    #[test]
    fn evicting_frees_an_unanswered_id_but_never_a_groups() {
        let mut r = IdRing::with_room(1, 0);
        r.sent(0, 0);
        assert_eq!(r.may_send(256, 10, 1000), None, "held, young");
        assert!(r.evict(256));
        assert_eq!(r.may_send(256, 10, 1000), Some(false));
        r.sent(256, 10);
        // ID 0 now names request 256: an answer carrying it is taken for
        // 256's (one byte of ID cannot tell them apart).
        assert_eq!(
            r.find(0, 257),
            Found::Answer {
                seq: 256,
                sent_ns: 10
            }
        );
        let mut g = IdRing::for_group(1);
        g.sent(0, 0);
        assert!(!g.evict(256));
        assert_eq!(g.may_send(256, 10, 1000), None);
    }
}
