//! One worker's AF_XDP socket over its buffer pool: which chunks the kernel
//! holds, frames in and out, and the bookkeeping that keeps every slot
//! accounted for.
//!
//! A receive slot goes to the kernel on the fill ring (taken off the
//! pool's free list, so nothing else can lend it) and comes back on RX,
//! where it is lent like any received datagram, its window narrowed to the
//! UDP payload. A send writes its headers just before its payload, in the
//! same chunk (a reply or forward: the frame it arrived in), and goes out
//! on TX; its slot reference is dropped when the completion ring gives the
//! chunk back. A slot that other sends also read, or without room before
//! the payload, is copied into a send slot first (counted).

use std::collections::VecDeque;
use std::io;

use super::xsk::{RingSizes, Xsk, XskStats};
use crate::bufring::{Lent, Pool};
use crate::frame::{FrameError, Headers, UdpFrame};
use crate::sys::Transmit;

/// Bytes kept before a send slot's window for the headers.
pub(crate) const SEND_BASE: u32 = 128;
/// Where a copy starts in a scratch chunk (where a received frame's
/// headers would end).
const SCRATCH_AT: u32 = 256 + 128;

/// Why [`XdpPort::send`] did not take a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The TX ring, or the send slots for a copy, are full: try later.
    Full,
    /// The headers and payload do not make a frame here.
    Unfit,
}

/// A worker's AF_XDP socket and what it holds of the pool.
pub(crate) struct XdpPort {
    xsk: Xsk,
    /// Per slot: on the fill ring (or in the kernel between fill and RX).
    in_fill: Vec<bool>,
    /// Per slot: the 802.1Q tag of the frame last received into it.
    rx_vlan: Vec<Option<u16>>,
    filled: u32,
    fill_target: u32,
    /// Receive slots left for the engine's ordinary sockets.
    keep: usize,
    /// Sends on the TX ring, in order, with their chunk address and
    /// whether they go from a scratch chunk (a reserved receive slot).
    inflight: VecDeque<(u64, Transmit, bool)>,
    /// Sends that went out through a copy since the last look.
    pub copies: u64,
    /// Completions that named another chunk than the oldest send's.
    pub mismatched: u64,
}

impl XdpPort {
    /// Opens the socket on `queue` of `ifindex` over `pool`'s whole arena
    /// (one chunk per slot) and binds it (zero-copy first unless
    /// `force_copy`). Returns the port and why it is not zero-copy.
    pub(crate) fn open(
        pool: &mut Pool,
        ifindex: u32,
        queue: u32,
        sizes: RingSizes,
        force_copy: bool,
    ) -> io::Result<(XdpPort, Option<String>)> {
        let (base, len) = pool.arena();
        // SAFETY: the arena is page aligned (mmap) and its length a multiple
        // of the slot size (a page). Chunks reach the kernel only through
        // this port's fill and TX rings, whose bookkeeping below keeps them
        // away from every other use (fill: off the pool's free list; TX: a
        // slot referenced by the send until its completion). The kernel pins
        // the pages it was given, so even a pool dropped before the socket
        // could not let the kernel write into memory reused by another
        // allocation.
        let (xsk, why) = unsafe {
            Xsk::new(
                ifindex,
                queue,
                base,
                len,
                pool.slot_size() as u32,
                sizes,
                force_copy,
            )?
        };
        pool.set_send_base(SEND_BASE);
        let total = pool.counts().total as usize;
        let recv_home = pool.recv_home();
        Ok((
            XdpPort {
                xsk,
                in_fill: vec![false; total],
                rx_vlan: vec![None; total],
                filled: 0,
                fill_target: sizes.fill.min(recv_home as u32),
                keep: (recv_home / 16).clamp(1, 256),
                inflight: VecDeque::new(),
                copies: 0,
                mismatched: 0,
            },
            why,
        ))
    }

    /// The socket's descriptor.
    pub(crate) fn fd(&self) -> i32 {
        self.xsk.fd()
    }

    /// The kernel's counters.
    pub(crate) fn kernel_stats(&self) -> io::Result<XskStats> {
        self.xsk.stats()
    }

    /// Puts free receive slots on the fill ring, up to its target, leaving
    /// some for the ordinary sockets.
    pub(crate) fn refill(&mut self, pool: &mut Pool) {
        let mut n = 0;
        while self.filled < self.fill_target && pool.recv_home() > self.keep {
            if self.xsk.fill_free() == 0 {
                break;
            }
            let Some(slot) = pool.reserve_recv() else {
                break;
            };
            let ok = self.xsk.fill(pool.chunk_of(slot));
            debug_assert!(ok, "room was checked");
            self.in_fill[slot as usize] = true;
            self.filled += 1;
            n += 1;
        }
        if n > 0 {
            self.xsk.fill_submit();
        }
        if self.xsk.rx_needs_wakeup() && self.filled > 0 {
            self.xsk.rx_wakeup();
        }
    }

    /// Takes up to `budget` received frames: each is lent (its window the
    /// UDP payload when it parsed) and pushed on `out` with what the parser
    /// said; the caller releases it. Returns how many were taken; a chunk the
    /// kernel was never given is counted in `invalid`.
    pub(crate) fn recv(
        &mut self,
        pool: &mut Pool,
        budget: u32,
        invalid: &mut u64,
        out: &mut Vec<(Result<UdpFrame, FrameError>, Lent)>,
    ) -> u32 {
        let n = self.xsk.rx_ready().min(budget);
        for k in 0..n {
            let (addr, len) = self.xsk.rx_read(k);
            let Some(slot) = pool.slot_at(addr).filter(|&s| self.in_fill[s as usize]) else {
                *invalid += 1;
                continue;
            };
            self.in_fill[slot as usize] = false;
            self.filled -= 1;
            let off = (addr - pool.chunk_of(slot)) as u32;
            let Some(mut lent) = pool.lend(slot, off, len) else {
                // Out of the slot's bounds: give the slot back unused.
                pool.unreserve(slot);
                *invalid += 1;
                continue;
            };
            let parsed = UdpFrame::new_checked(lent.bytes());
            self.rx_vlan[slot as usize] = parsed.as_ref().ok().and_then(|f| f.vlan);
            if let Ok(fr) = &parsed {
                lent.set_window(off + fr.payload_off as u32, fr.payload_len as u32);
            }
            out.push((parsed, lent));
        }
        if n > 0 {
            self.xsk.rx_release(n);
        }
        n
    }

    /// The 802.1Q tag of the frame in receive slot `slot` (a send from it,
    /// a reply or a forward, leaves with the same tag).
    pub(crate) fn vlan_of(&self, slot: u32) -> Option<u16> {
        self.rx_vlan.get(slot as usize).copied().flatten()
    }

    /// Puts send `t` on the TX ring with headers `h` (one datagram: no GSO
    /// here). On success the port holds `t`'s slot reference (or the
    /// copy's) until its completion. Refused, the send comes back (perhaps
    /// as a copy, holding the copy's reference instead) for the caller to
    /// keep, send another way, or give up.
    pub(crate) fn send(
        &mut self,
        pool: &mut Pool,
        t: Transmit,
        h: &Headers,
    ) -> Result<(), (Refused, Transmit)> {
        if self.xsk.tx_free() == 0 {
            return Err((Refused::Full, t));
        }
        let at = pool.base_in_chunk(t.slot) + t.off;
        let mut scratch_of = None;
        let t = if pool.refs(t.slot) == 1 && at as usize >= h.len() {
            t
        } else if let Some(copy) = pool.copy_to_send(t.slot, t.off, t.len) {
            pool.unref(t.slot);
            self.copies += 1;
            Transmit {
                slot: copy,
                off: 0,
                ..t
            }
        } else {
            // Every send slot is taken (often by the train this piece is
            // cut from): a free receive slot serves as scratch.
            let Some(s) = pool.reserve_recv() else {
                return Err((Refused::Full, t));
            };
            let at = SCRATCH_AT;
            if !pool.copy_to_reserved(t.slot, t.off, t.len, s, at) {
                pool.unreserve(s);
                return Err((Refused::Unfit, t));
            }
            scratch_of = Some(t);
            Transmit {
                slot: s,
                off: at,
                ..t
            }
        };
        let at = (pool.base_in_chunk(t.slot) + t.off) as usize;
        let chunk = pool.chunk_of(t.slot);
        // SAFETY: the slot has one reference, `t`'s: no Lent of it exists
        // (a Lent holds a reference), no send of it is in flight (each holds
        // one), and it is not on the fill ring (those have none). Nothing
        // else reads or writes it while the headers are written.
        let buf = unsafe { pool.chunk_mut(t.slot) };
        let Some(start) = h.write(buf, at, t.len as usize) else {
            if let Some(orig) = scratch_of {
                pool.unreserve(t.slot);
                return Err((Refused::Unfit, orig));
            }
            return Err((Refused::Unfit, t));
        };
        let scratch = scratch_of.is_some();
        if let Some(orig) = scratch_of {
            // The copy goes instead: the original's reference is dropped.
            pool.unref(orig.slot);
            self.copies += 1;
        }
        let addr = chunk + start as u64;
        let ok = self.xsk.tx(addr, (at - start) as u32 + t.len);
        debug_assert!(ok, "room was checked");
        self.inflight.push_back((addr, t, scratch));
        Ok(())
    }

    /// Publishes the TX ring and kicks the kernel if it asks.
    pub(crate) fn kick(&mut self) -> io::Result<u32> {
        self.xsk.tx_submit()
    }

    /// Sends on the TX ring not yet completed.
    pub(crate) fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Takes the completion ring: each finished send to `done`, which
    /// drops its slot reference, or, for a send from a scratch chunk
    /// (`true`), puts the slot back with [`Pool::unreserve`].
    pub(crate) fn complete(&mut self, mut done: impl FnMut(Transmit, bool)) -> u32 {
        let n = self.xsk.comp_ready();
        for k in 0..n {
            let addr = self.xsk.comp_read(k);
            let Some((want, t, scratch)) = self.inflight.pop_front() else {
                self.mismatched += 1;
                continue;
            };
            self.mismatched += u64::from(want != addr);
            done(t, scratch);
        }
        if n > 0 {
            self.xsk.comp_release(n);
        }
        n
    }

    /// Closes the socket; afterwards the kernel holds nothing of the pool.
    /// The slots on the fill ring go home; the sends never completed are
    /// returned with whether they went from a scratch chunk (the caller
    /// cancels them).
    pub(crate) fn close(self, pool: &mut Pool) -> Vec<(Transmit, bool)> {
        let XdpPort {
            xsk,
            in_fill,
            inflight,
            ..
        } = self;
        // Closing unbinds the socket (after an RCU grace period the kernel
        // no longer touches its UMEM).
        drop(xsk);
        for (slot, held) in in_fill.into_iter().enumerate() {
            if held {
                pool.unreserve(slot as u32);
            }
        }
        inflight.into_iter().map(|(_, t, s)| (t, s)).collect()
    }
}
