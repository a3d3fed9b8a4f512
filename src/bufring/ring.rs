//! The provided-buffer ring (`IORING_REGISTER_PBUF_RING`): see the
//! module doc of `bufring`.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use super::mapping::Mapping;

/// The provided-buffer ring shared with the kernel.
pub struct BufRing {
    pub(super) mem: Mapping,
    entries: u16,
    /// Our copy of the tail, published with [`BufRing::publish`].
    tail: u16,
    published: u16,
}

impl BufRing {
    /// Allocates a ring of `entries` entries (a power of two, at most 32768).
    pub fn new(entries: u16) -> io::Result<Self> {
        if !entries.is_power_of_two() || entries > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer ring entries must be a power of two up to 32768",
            ));
        }
        let mem =
            Mapping::new(entries as usize * std::mem::size_of::<io_uring::types::BufRingEntry>())?;
        Ok(BufRing {
            mem,
            entries,
            tail: 0,
            published: 0,
        })
    }

    /// Address to register with `IORING_REGISTER_PBUF_RING`.
    pub fn addr(&self) -> u64 {
        self.mem.ptr.as_ptr() as u64
    }

    /// Number of entries.
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// Our tail: entries pushed so far (free-running).
    #[cfg(test)]
    pub(super) fn tail(&self) -> u16 {
        self.tail
    }

    pub(super) fn push(&mut self, addr: u64, len: u32, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        let base = self
            .mem
            .ptr
            .as_ptr()
            .cast::<io_uring::types::BufRingEntry>();
        // SAFETY: idx < entries, so the entry lies inside the mapping. The
        // kernel does not read entries past the published tail, so writing
        // this one races with nothing.
        let e = unsafe { &mut *base.add(idx) };
        e.set_addr(addr);
        e.set_len(len);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every entry pushed so far visible to the kernel.
    pub(super) fn publish(&mut self) {
        if self.published == self.tail {
            return;
        }
        let base = self
            .mem
            .ptr
            .as_ptr()
            .cast::<io_uring::types::BufRingEntry>();
        // SAFETY: the tail field lies inside entry 0, inside our mapping; the
        // kernel only reads it, so an atomic store through an AtomicU16 view
        // of a u16 that is suitably aligned is sound.
        let tail = unsafe { &*(io_uring::types::BufRingEntry::tail(base) as *const AtomicU16) };
        tail.store(self.tail, Ordering::Release);
        self.published = self.tail;
    }
}
