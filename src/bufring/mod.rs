//! The buffer arena, the io_uring provided-buffer ring, and slot accounting.
//!
//! Each worker owns one [`Pool`]: a page-aligned arena of fixed-size slots,
//! allocated once. Slots `0..recv_slots` receive; the rest carry copies made
//! by `send_to`. A slot is always in exactly one of these places:
//!
//! - **home**: a receive slot published in the buffer ring (the kernel may
//!   write into it at any time) or on the receive free list (mmsg backends);
//!   a send slot on the send free list;
//! - **out**: lent to the handler as a [`Lent`], and/or referenced by one or
//!   more sends in flight. A reference count per slot says how many holders
//!   it has; when it falls to zero the slot goes home.
//!
//! A receive slot is laid out as `[HEADROOM][payload]`: see [`HEADROOM`].
//!
//! `Pool::out()` counts slots that are not home; it is zero whenever the
//! worker is idle, and tests check it after every flood.
//!
//! ## The provided-buffer ring
//!
//! [`BufRing`] is the ring shared with the kernel (`IORING_REGISTER_PBUF_RING`):
//! an array of `io_uring_buf {addr, len, bid}` entries, a power of two long,
//! whose tail (a u16 that overlays the `resv` field of entry 0) the
//! application advances. The kernel consumes entries from the head when a
//! multishot receive needs a buffer and reports the buffer id in the CQE.
//! The application writes entries past the tail, then publishes the new tail
//! once per batch with a release store. The tail is a free-running u16: it
//! wraps and is never masked; only the entry index is masked.
//!
//! ## How long the kernel holds a buffer
//!
//! A receive slot published in the ring belongs to the kernel from the moment
//! the tail that covers it is published until a CQE names its buffer id (or
//! until the ring is unregistered). A slot referenced by a send belongs to the
//! kernel, read-only, from submission until that send's CQE is reaped. The
//! arena is unmapped only after the owning io_uring is gone, and the uring
//! driver waits for every outstanding CQE before it lets that happen.

mod lent;
mod mapping;
mod ring;

use std::io;
use std::marker::PhantomData;
use std::ptr::NonNull;

pub(crate) use lent::Lent;
use mapping::Mapping;
pub use ring::BufRing;

pub use crate::limits::{HEADROOM, NAME_LEN, RECV_CMSG_LEN};

/// Where receive slots live when they are home.
enum RecvHome {
    /// Published in an io_uring buffer ring.
    Ring(BufRing),
    /// On a free list, for backends that pass buffers per call.
    List(Vec<u32>),
}

/// Counters of slot movements, for stats and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolCounts {
    /// Slots in the pool.
    pub total: u32,
    /// Slots not home (lent or in flight).
    pub out: u32,
}

/// Fixed-size slots for one worker; see the module doc.
pub struct Pool {
    // Field order: the ring (if any) was registered with an io_uring owned by
    // the driver, which holds this pool and drops its ring first.
    recv: RecvHome,
    arena: Mapping,
    slot_size: u32,
    recv_slots: u32,
    total: u32,
    refs: Vec<u16>,
    send_free: Vec<u32>,
    /// Per send slot (by slot - recv_slots): what its last writer said its
    /// bytes are ([`Pool::tag`]); 0: unknown.
    send_tags: Vec<u64>,
    /// Per send slot: how many of its first bytes may hold something a
    /// send wrote (past them it is still zero, as mapped).
    send_dirty: Vec<u32>,
    out: u32,
    recv_out: u32,
    /// Bytes kept free at the start of every send slot (for the headers
    /// the xdp backend writes before a copy); 0 otherwise.
    send_base: u32,
}

impl Pool {
    /// Allocates `recv_slots + send_slots` slots of `slot_size` bytes.
    /// With `ring`, receive slots are published in a provided-buffer ring
    /// (`recv_slots` must then be a power of two up to 32768); otherwise they
    /// sit on a free list.
    pub fn new(
        slot_size: usize,
        recv_slots: usize,
        send_slots: usize,
        ring: bool,
    ) -> io::Result<Self> {
        if slot_size == 0 || slot_size > (1 << 20) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "slot size must be 1 B..1 MiB",
            ));
        }
        let slot_size = slot_size.next_multiple_of(64);
        let total = recv_slots + send_slots;
        if recv_slots == 0 || total > u16::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "need 1..65535 slots in all, at least one for receiving",
            ));
        }
        let arena = Mapping::new(slot_size * total).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "the worker's {total} buffer slots ({} KiB) could not be mapped: {e} (a \
                     limit on memory: `ulimit -v`, a cgroup's memory.max; or fewer recv_slots, \
                     a smaller slot_size)",
                    (slot_size * total).div_ceil(1024)
                ),
            )
        })?;
        let recv = if ring {
            let entries = u16::try_from(recv_slots)
                .ok()
                .filter(|n| n.is_power_of_two() && *n <= 32768)
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "receive slots must be a power of two up to 32768",
                    )
                })?;
            RecvHome::Ring(BufRing::new(entries)?)
        } else {
            RecvHome::List((0..recv_slots as u32).rev().collect())
        };
        let mut pool = Pool {
            recv,
            arena,
            slot_size: slot_size as u32,
            recv_slots: recv_slots as u32,
            total: total as u32,
            refs: vec![0; total],
            send_free: (recv_slots as u32..total as u32).rev().collect(),
            send_tags: vec![0; send_slots],
            send_dirty: vec![0; send_slots],
            out: 0,
            recv_out: 0,
            send_base: 0,
        };
        if let RecvHome::Ring(ring) = &mut pool.recv {
            for slot in 0..recv_slots as u32 {
                let addr = pool.arena.ptr.as_ptr() as u64 + slot as u64 * slot_size as u64;
                ring.push(addr, slot_size as u32, slot as u16);
            }
            ring.publish();
        }
        Ok(pool)
    }

    /// The arena: its address and length, for registering it with the
    /// kernel as one fixed buffer (zero-copy sends read slots from it).
    pub fn arena(&self) -> (*mut u8, usize) {
        (self.arena.ptr.as_ptr(), self.arena.len)
    }

    /// Size of each slot in bytes.
    pub fn slot_size(&self) -> usize {
        self.slot_size as usize
    }

    /// The buffer ring, when the pool has one.
    pub fn ring(&self) -> Option<&BufRing> {
        match &self.recv {
            RecvHome::Ring(r) => Some(r),
            RecvHome::List(_) => None,
        }
    }

    /// How many slots are home and how many out.
    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            total: self.total,
            out: self.out,
        }
    }

    /// Whether receiving is about to starve: fewer than an eighth of the
    /// receive slots are home (the rest lent or held by sends).
    pub fn recv_starving(&self) -> bool {
        self.recv_home() * 8 < self.recv_slots as usize
    }

    /// Whether at least half the receive slots are home: where a worker
    /// that gave up sends to stop starving stops giving up.
    pub fn recv_half_home(&self) -> bool {
        self.recv_home() * 2 >= self.recv_slots as usize
    }

    /// Receive slots that are home and can be handed to the kernel.
    pub fn recv_home(&self) -> usize {
        match &self.recv {
            RecvHome::Ring(_) => (self.recv_slots - self.recv_out) as usize,
            RecvHome::List(l) => l.len(),
        }
    }

    fn base(&self, slot: u32) -> NonNull<u8> {
        debug_assert!(slot < self.total);
        let skip = if slot >= self.recv_slots {
            self.send_base
        } else {
            0
        };
        // SAFETY: slot < total and skip < slot_size, so the offset lies
        // inside the arena mapping.
        unsafe {
            self.arena
                .ptr
                .add(slot as usize * self.slot_size as usize + skip as usize)
        }
    }

    /// Keeps the first `bytes` of every send slot out of its window (the
    /// slot's address and capacity start after them), so that headers can
    /// be written before a copy. Set before any send slot is taken.
    pub fn set_send_base(&mut self, bytes: u32) {
        assert!(bytes < self.slot_size && self.send_free.len() == self.send_slots());
        self.send_base = bytes;
    }

    /// Bytes a send slot holds (the slot less its base).
    pub fn send_cap(&self) -> usize {
        (self.slot_size - self.send_base) as usize
    }

    /// Where `slot`'s chunk starts, from the arena's start (the xdp
    /// backend's UMEM addresses).
    pub fn chunk_of(&self, slot: u32) -> u64 {
        u64::from(slot) * u64::from(self.slot_size)
    }

    /// The slot whose chunk holds arena offset `addr`, if any.
    pub fn slot_at(&self, addr: u64) -> Option<u32> {
        u32::try_from(addr / u64::from(self.slot_size))
            .ok()
            .filter(|&s| s < self.total)
    }

    /// Bytes of `slot` a window may span: a send slot's less its base.
    fn window_cap(&self, slot: u32) -> u32 {
        if slot >= self.recv_slots {
            self.slot_size - self.send_base
        } else {
            self.slot_size
        }
    }

    /// Copies `len` bytes at `off` of `slot` to `at` past slot `to`'s base.
    /// False (nothing copied) when either range is outside its slot or the
    /// slots are one.
    ///
    /// # Safety
    ///
    /// Nothing may write `slot` or touch `to` during the call: `to` is the
    /// caller's alone (a send slot it was just lent, or a receive slot it
    /// reserved), and `slot` is only read (sends in flight read it too;
    /// nothing writes a slot with a send of it pending).
    unsafe fn copy_between(&mut self, slot: u32, off: u32, len: u32, to: u32, at: u32) -> bool {
        if slot >= self.total
            || to >= self.total
            || to == slot
            || off as u64 + len as u64 > self.window_cap(slot) as u64
            || at as u64 + len as u64 > self.window_cap(to) as u64
        {
            return false;
        }
        let (from, dst) = (self.base(slot), self.base(to));
        // SAFETY: both ranges lie inside their slots (checked) and the
        // slots differ; exclusive access to `to` is the caller's promise.
        unsafe {
            std::ptr::copy_nonoverlapping(
                from.as_ptr().add(off as usize),
                dst.as_ptr().add(at as usize),
                len as usize,
            )
        };
        true
    }

    /// Copies `len` bytes at `off` of `slot` into a free send slot's
    /// window; returns that slot, with one reference, or `None` when no
    /// send slot is free (or the bytes do not fit).
    pub fn copy_to_send(&mut self, slot: u32, off: u32, len: u32) -> Option<u32> {
        self.gather_to_send(std::iter::once((slot, off, len)))
    }

    /// Copies the byte ranges `parts` (slot, offset, length) one after the
    /// other into a free send slot's window; returns that slot, with one
    /// reference, or `None` (nothing copied, nothing taken) when no send
    /// slot is free or the bytes do not fit.
    pub fn gather_to_send(
        &mut self,
        parts: impl Iterator<Item = (u32, u32, u32)> + Clone,
    ) -> Option<u32> {
        let total: u64 = parts.clone().map(|(_, _, len)| u64::from(len)).sum();
        if total > u64::from(self.slot_size - self.send_base) {
            return None;
        }
        let to = self.alloc_send()?;
        let s = to.slot;
        let mut at = 0;
        for (slot, off, len) in parts {
            // SAFETY: `s` was just taken off the free list and is lent to
            // us alone; the `slot`s are only read.
            if !unsafe { self.copy_between(slot, off, len, s, at) } {
                self.release(to);
                return None;
            }
            at += len;
        }
        self.note_written(s, at);
        self.set_tag(s, 0);
        self.hold(s);
        self.release(to);
        Some(s)
    }

    /// A copy of `len` bytes at `off` of `slot`'s window (tests read what a
    /// send would put on the wire).
    #[cfg(test)]
    pub fn bytes_of(&self, slot: u32, off: u32, len: u32) -> Vec<u8> {
        assert!(slot < self.total && off as u64 + len as u64 <= self.window_cap(slot) as u64);
        // SAFETY: the range lies inside the slot (asserted); tests read
        // slots no one writes meanwhile.
        unsafe {
            std::slice::from_raw_parts(self.base(slot).as_ptr().add(off as usize), len as usize)
        }
        .to_vec()
    }

    /// Copies `len` bytes at `off` of `slot` to `at` in receive slot `to`,
    /// which the caller reserved ([`Pool::reserve_recv`]) and holds: a
    /// scratch chunk for a send that has no slot of its own to go from.
    /// Returns false (nothing copied) when the bytes do not fit.
    pub fn copy_to_reserved(&mut self, slot: u32, off: u32, len: u32, to: u32, at: u32) -> bool {
        if to >= self.recv_slots || self.refs[to as usize] != 0 {
            return false;
        }
        // SAFETY: a reserved receive slot with no reference is off every
        // list, lent to no one and not the kernel's: the caller's alone.
        unsafe { self.copy_between(slot, off, len, to, at) }
    }

    /// Where `slot`'s window starts within its chunk (a send slot's base).
    pub fn base_in_chunk(&self, slot: u32) -> u32 {
        if slot >= self.recv_slots {
            self.send_base
        } else {
            0
        }
    }

    /// References `slot` has (0: home).
    pub fn refs(&self, slot: u32) -> u16 {
        self.refs.get(slot as usize).copied().unwrap_or(0)
    }

    /// The whole chunk of `slot` (from its start, before a send slot's
    /// base), writable.
    ///
    /// # Safety
    ///
    /// For as long as the slice lives, nothing else may read or write the
    /// chunk: no [`Lent`] of the slot exists, and the kernel holds no
    /// reference to it (it is not on a ring, and no send of it is in
    /// flight).
    pub unsafe fn chunk_mut(&mut self, slot: u32) -> &mut [u8] {
        assert!(slot < self.total);
        // SAFETY: inside the arena (slot < total); exclusive per the caller.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.arena
                    .ptr
                    .as_ptr()
                    .add(slot as usize * self.slot_size as usize),
                self.slot_size as usize,
            )
        }
    }

    /// Address of a slot, for the kernel (iovec or ring entry).
    pub fn slot_addr(&self, slot: u32) -> *mut u8 {
        self.base(slot).as_ptr()
    }

    /// Takes a receive slot off the free list to pass to a receive call
    /// (mmsg backends). The caller must [`Pool::lend`] it if the kernel filled
    /// it, or [`Pool::unreserve`] it otherwise.
    pub fn reserve_recv(&mut self) -> Option<u32> {
        match &mut self.recv {
            RecvHome::List(l) => l.pop(),
            RecvHome::Ring(_) => None,
        }
    }

    /// Returns an unused reserved receive slot to its free list.
    pub fn unreserve(&mut self, slot: u32) {
        if let RecvHome::List(l) = &mut self.recv {
            l.push(slot);
        }
    }

    /// The kernel handed over receive slot `slot` holding a payload at
    /// `off..off+len`: it leaves home with one reference, lent to the caller.
    /// Returns `None` (and changes nothing) for an id the pool cannot lend:
    /// out of range, or already out (a kernel or driver bug, counted by the caller).
    pub fn lend(&mut self, slot: u32, off: u32, len: u32) -> Option<Lent> {
        if slot >= self.recv_slots || self.refs[slot as usize] != 0 {
            return None;
        }
        let cap = self.slot_size;
        if off as u64 + len as u64 > cap as u64 {
            return None;
        }
        self.refs[slot as usize] = 1;
        self.out += 1;
        self.recv_out += 1;
        Some(Lent {
            ptr: self.base(slot),
            slot,
            off,
            len,
            cap,
            _not_send: PhantomData,
        })
    }

    /// Send slots that are home (free for a copy).
    pub fn send_free(&self) -> usize {
        self.send_free.len()
    }

    /// Send slots in all.
    pub fn send_slots(&self) -> usize {
        (self.total - self.recv_slots) as usize
    }

    /// Takes a free send slot (for a copy); `None` when all are out.
    pub fn alloc_send(&mut self) -> Option<Lent> {
        let slot = self.send_free.pop()?;
        self.refs[slot as usize] = 1;
        self.out += 1;
        Some(Lent {
            ptr: self.base(slot),
            slot,
            off: 0,
            len: 0,
            cap: self.slot_size - self.send_base,
            _not_send: PhantomData,
        })
    }

    /// The tag of send slot `slot`: what the handler that last built a
    /// datagram in it said its bytes are (0: unknown; receive slots are
    /// always 0). Send slots are written only by sends, so the bytes stay
    /// as that handler left them.
    pub fn tag(&self, slot: u32) -> u64 {
        slot.checked_sub(self.recv_slots)
            .and_then(|i| self.send_tags.get(i as usize))
            .copied()
            .unwrap_or(0)
    }

    /// Sets send slot `slot`'s tag (see [`Pool::tag`]).
    pub fn set_tag(&mut self, slot: u32, tag: u64) {
        if let Some(t) = slot
            .checked_sub(self.recv_slots)
            .and_then(|i| self.send_tags.get_mut(i as usize))
        {
            *t = tag;
        }
    }

    /// Makes the first `cap` bytes of the lent send slot `lent` safe to
    /// hand to a handler that builds a datagram there: unless the slot's
    /// tag says what they are (the handler kept them on purpose), the
    /// bytes any earlier send wrote are zeroed, so nothing of an earlier
    /// datagram can go out with this one. Returns the tag. The slot then
    /// counts `cap` bytes as written (the handler may write them all).
    pub fn scrub_send(&mut self, lent: &mut Lent, cap: u32) -> u64 {
        let tag = self.tag(lent.slot);
        let Some(i) = lent.slot.checked_sub(self.recv_slots).map(|i| i as usize) else {
            return 0;
        };
        let dirty = &mut self.send_dirty[i];
        if tag == 0 {
            let n = (*dirty).min(cap);
            lent.set_window(0, n);
            lent.bytes_mut().fill(0);
        }
        *dirty = (*dirty).max(cap);
        lent.set_window(0, cap);
        tag
    }

    /// A copy of `len` bytes was written at the start of send slot `slot`.
    pub fn note_written(&mut self, slot: u32, len: u32) {
        if let Some(d) = slot
            .checked_sub(self.recv_slots)
            .and_then(|i| self.send_dirty.get_mut(i as usize))
        {
            *d = (*d).max(len);
        }
    }

    /// Adds a reference to an out slot (a send is about to read it).
    pub fn hold(&mut self, slot: u32) {
        let r = &mut self.refs[slot as usize];
        assert!(*r > 0, "hold on a slot that is home");
        *r += 1;
    }

    /// Ends a lending.
    pub fn release(&mut self, lent: Lent) {
        self.unref(lent.slot);
    }

    /// Drops one reference; at zero the slot goes home. Receive slots going
    /// back to a ring become visible to the kernel at the next [`Pool::publish`].
    pub fn unref(&mut self, slot: u32) {
        let r = &mut self.refs[slot as usize];
        assert!(*r > 0, "unref on a slot that is home");
        *r -= 1;
        if *r > 0 {
            return;
        }
        self.out -= 1;
        if slot >= self.recv_slots {
            self.send_free.push(slot);
            return;
        }
        self.recv_out -= 1;
        let addr = self.slot_addr(slot) as u64;
        let size = self.slot_size;
        match &mut self.recv {
            RecvHome::Ring(ring) => ring.push(addr, size, slot as u16),
            RecvHome::List(l) => l.push(slot),
        }
    }

    /// The kernel may still write into this pool's memory (a ring that
    /// could not be drained): never unmap it, nor the buffer ring.
    pub fn leak(&mut self) {
        self.arena.leaked = true;
        if let RecvHome::Ring(r) = &mut self.recv {
            r.mem.leaked = true;
        }
    }

    /// Publishes slots returned to the ring since the last call.
    pub fn publish(&mut self) {
        if let RecvHome::Ring(r) = &mut self.recv {
            r.publish();
        }
    }
}

#[cfg(test)]
mod tests;
