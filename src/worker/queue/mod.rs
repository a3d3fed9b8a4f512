//! The sends a handler queued, waiting for the backend to submit them.
//!
//! Every queued [`Transmit`] holds one reference on its slot, taken here
//! when it is queued and dropped by the worker when the send's outcome is
//! known. A GSO train is queued as one transmit while the kernel accepts
//! `UDP_SEGMENT`; once it has refused (GSO off), a train is cut here into
//! plain datagrams of the segment size, each holding its own reference.
//! Datagrams or trains built together in one slot
//! (`Transport::send_each_with`, `Transport::send_trains_with`) are always
//! cut here into their own sends, so the backends see only whole
//! datagrams and trains.

use std::num::{NonZeroU16, NonZeroU32};

use crate::bufring::Pool;
use crate::sys::Transmit;

/// Datagrams up to this size, queued one after another to one
/// destination, are copied into one GSO train ([`SendQueue::coalesce`]).
/// Small enough that a train's segments fit any path a single datagram
/// of theirs would (IPv4's minimum reassembly size is 576 bytes).
pub(crate) const COALESCE_MAX: u32 = 512;
/// Datagrams per coalesced train at most (the kernel's `UDP_MAX_SEGMENTS`
/// is 64 on older kernels).
const COALESCE_SEGMENTS: usize = 64;

/// Transmits in the order they were asked for, at most `cap` at once.
pub(crate) struct SendQueue {
    /// The transmits; the first `head` are gone (submitted) and are
    /// dropped lazily, so that taking a batch off the front does not move
    /// the rest (a `drain` per `sendmmsg` moved every transmit behind it:
    /// 1.1% of a 64 B flood's samples in memmove).
    q: Vec<Transmit>,
    head: usize,
    gso: bool,
    /// Whether runs of small datagrams become trains ([`SendQueue::coalesce`]).
    coalesce: bool,
    cap: usize,
}

impl SendQueue {
    /// An empty queue of at most `cap` sends; `gso`: whether trains may go
    /// as one send.
    pub fn new(cap: usize, gso: bool) -> Self {
        SendQueue {
            q: Vec::with_capacity(cap.min(4096)),
            head: 0,
            gso,
            coalesce: gso,
            cap,
        }
    }

    /// Entries `t` takes: one, or with GSO off one per segment.
    fn entries(&self, t: &Transmit) -> usize {
        match t.segment {
            Some(s) if !self.gso && t.len > u32::from(s.get()) => {
                t.len.div_ceil(u32::from(s.get())) as usize
            }
            _ => 1,
        }
    }

    /// Whether another send fits.
    pub fn has_room(&self) -> bool {
        self.len() < self.cap
    }

    /// Queues `t` if there is room (false, nothing queued, otherwise).
    pub fn try_push(&mut self, pool: &mut Pool, t: Transmit) -> bool {
        if self.len() + self.entries(&t) > self.cap {
            return false;
        }
        self.push(pool, t);
        true
    }

    /// Queues `t` whatever the room (a send already accepted, queued again
    /// after a refusal), taking a reference on its slot per queued send. A
    /// train no longer than one segment is a plain datagram; with GSO off a
    /// train becomes one datagram per segment.
    pub fn push(&mut self, pool: &mut Pool, t: Transmit) {
        let seg = match t.segment {
            Some(s) if t.len > u32::from(s.get()) => s,
            _ => {
                pool.hold(t.slot);
                self.append(Transmit { segment: None, ..t });
                return;
            }
        };
        if self.gso {
            pool.hold(t.slot);
            self.append(t);
            return;
        }
        self.split(pool, t, u32::from(seg.get()));
    }

    /// Queues `t`'s bytes as pieces of `piece` bytes each (the last may
    /// be shorter), each its own send, if all of them fit (false, nothing
    /// queued, otherwise). A piece is a datagram, or with `t.segment` a
    /// GSO train of its own, cut like any train ([`SendQueue::push`]); a
    /// timestamp ID goes with the first piece only.
    pub fn try_push_pieces(&mut self, pool: &mut Pool, t: Transmit, piece: NonZeroU32) -> bool {
        let piece = piece.get();
        let (full, last) = (t.len / piece, t.len % piece);
        let entries = |len: u32| self.entries(&Transmit { len, ..t });
        let need = full as usize * entries(piece) + if last > 0 { entries(last) } else { 0 };
        if self.len() + need > self.cap {
            return false;
        }
        let mut o = 0;
        while o < t.len {
            let l = piece.min(t.len - o);
            self.push(
                pool,
                Transmit {
                    off: t.off + o,
                    len: l,
                    ts_id: t.ts_id.filter(|_| o == 0),
                    ..t
                },
            );
            o += l;
        }
        true
    }

    /// `t` cut into datagrams of `seg` bytes, each holding a reference on
    /// the slot; a timestamp ID goes with the first only.
    fn split(&mut self, pool: &mut Pool, t: Transmit, seg: u32) {
        let mut o = 0;
        while o < t.len {
            let l = seg.min(t.len - o);
            pool.hold(t.slot);
            self.append(Transmit {
                off: t.off + o,
                len: l,
                segment: None,
                ts_id: t.ts_id.filter(|_| o == 0),
                ..t
            });
            o += l;
        }
    }

    /// Turns each run of queued datagrams that go one after another from
    /// one socket to one destination with the same size (the last of a
    /// run may be shorter), source and TOS, each at most [`COALESCE_MAX`]
    /// bytes, into one GSO train: their bytes copied into one send slot,
    /// their own slots given back. One send then carries what took one
    /// each (a reply server under a flood from one client queues runs
    /// like that every batch); the receiver still gets each datagram as
    /// sent. Nothing changes with GSO off, for trains, for sends that
    /// ask for a TX timestamp, or for datagrams asked to go each by itself
    /// (`send_each_with`); a run is left as it is when no send slot is
    /// free. Returns the trains made.
    #[inline]
    pub fn coalesce(&mut self, pool: &mut Pool) -> usize {
        // Inlined: the usual turn (one send, or none) costs no call.
        if !(self.gso && self.coalesce) || self.len() < 2 {
            return 0;
        }
        self.coalesce_runs(pool)
    }

    /// [`SendQueue::coalesce`] with two sends or more queued.
    fn coalesce_runs(&mut self, pool: &mut Pool) -> usize {
        let small = |t: &Transmit| {
            t.segment.is_none()
                && !t.alone
                && t.ts_id.is_none()
                && !t.retried
                && !t.socket_segments
                && t.len > 0
                && t.len <= COALESCE_MAX
        };
        // A train is as long as a send slot holds.
        let room = pool.send_cap() as u32;
        let (mut r, mut w, mut made) = (self.head, self.head, 0);
        let end = self.q.len();
        while r < end {
            let t = self.q[r];
            let (mut n, mut bytes) = (1, t.len);
            if small(&t) {
                while r + n < end && n < COALESCE_SEGMENTS {
                    let u = &self.q[r + n];
                    if !(small(u)
                        && u.sock == t.sock
                        && u.dst.same(&t.dst)
                        && u.src == t.src
                        && u.tos == t.tos
                        && u.len <= t.len
                        && bytes + u.len <= room)
                    {
                        break;
                    }
                    bytes += u.len;
                    n += 1;
                    if u.len < t.len {
                        // A shorter datagram can only end a train.
                        break;
                    }
                }
            }
            let train = if n > 1 {
                let run = &self.q[r..r + n];
                pool.gather_to_send(run.iter().map(|u| (u.slot, u.off, u.len)))
                    .map(|slot| (slot, bytes))
            } else {
                None
            };
            match (train, NonZeroU16::new(t.len as u16)) {
                (Some((slot, len)), Some(seg)) => {
                    for u in &self.q[r..r + n] {
                        pool.unref(u.slot);
                    }
                    self.q[w] = Transmit {
                        slot,
                        off: 0,
                        len,
                        segment: Some(seg),
                        coalesced: true,
                        ..t
                    };
                    w += 1;
                    made += 1;
                }
                _ => {
                    // In place until the first train; moved down after it.
                    if w != r {
                        self.q.copy_within(r..r + n, w);
                    }
                    w += n;
                }
            }
            r += n;
        }
        self.q.truncate(w);
        made
    }

    /// Queues a coalesced train the kernel refused as a train again as
    /// the datagrams it was made of (from its own slot), GSO left on.
    pub fn push_cut(&mut self, pool: &mut Pool, t: Transmit) {
        match t.segment {
            Some(seg) => self.split(
                pool,
                Transmit {
                    coalesced: false,
                    alone: true,
                    ..t
                },
                u32::from(seg.get()),
            ),
            None => self.push(pool, t),
        }
    }

    /// Turns [`SendQueue::coalesce`] off (or back on, with GSO on).
    pub fn set_coalesce(&mut self, on: bool) {
        self.coalesce = on;
    }

    /// Whether trains go as one `UDP_SEGMENT` send.
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// The kernel refused `UDP_SEGMENT`: cut trains from now on.
    pub fn disable_gso(&mut self) {
        self.gso = false;
    }

    /// The queued transmits, oldest first.
    pub fn as_slice(&self) -> &[Transmit] {
        &self.q[self.head..]
    }

    /// Mutable access (to rewrite destinations when a socket's peer changes).
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Transmit> {
        self.q[self.head..].iter_mut()
    }

    /// Removes the `n` oldest (they were submitted). The storage is
    /// reused once empty, or compacted when a push would otherwise grow it.
    pub fn consume(&mut self, n: usize) {
        self.head += n.min(self.len());
        if self.head == self.q.len() {
            self.q.clear();
            self.head = 0;
        }
    }

    /// Appends `t`, first dropping the consumed ones if the storage is
    /// full (rather than growing it).
    fn append(&mut self, t: Transmit) {
        if self.head > 0 && self.q.len() == self.q.capacity() {
            self.q.drain(..self.head);
            self.head = 0;
        }
        self.q.push(t);
    }

    /// Removes and returns the oldest.
    pub fn pop_front(&mut self) -> Option<Transmit> {
        let t = *self.as_slice().first()?;
        self.consume(1);
        Some(t)
    }

    pub fn len(&self) -> usize {
        self.q.len() - self.head
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests;
