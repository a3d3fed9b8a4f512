//! [`Lent`]: a slot lent out of the pool.

use std::marker::PhantomData;
use std::ptr::NonNull;

/// A slot lent out of the pool: the only way to reach a slot's bytes.
///
/// A `Lent` is created when a slot leaves home with one reference and is given
/// back with [`Pool::release`](super::Pool::release). While it exists the kernel does not write the
/// slot (it is not in the ring; a send only reads, and only after the batch
/// the `Lent` belongs to has been handled).
pub(crate) struct Lent {
    pub(super) ptr: NonNull<u8>,
    pub(super) slot: u32,
    /// Start of the payload in the slot.
    pub off: u32,
    /// Payload length.
    pub len: u32,
    pub(super) cap: u32,
    pub(super) _not_send: PhantomData<*mut u8>,
}

impl Lent {
    /// The slot id.
    pub fn slot(&self) -> u32 {
        self.slot
    }
    /// The payload.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: off + len <= slot size (checked when the Lent was made),
        // the arena outlives every Lent (Lents are released before the pool is
        // dropped), and the slot is not written by the kernel while lent.
        unsafe {
            std::slice::from_raw_parts(self.ptr.as_ptr().add(self.off as usize), self.len as usize)
        }
    }
    /// The payload, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`; `&mut self` makes this the only reference
        // and there is exactly one Lent per lending of a slot.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.as_ptr().add(self.off as usize),
                self.len as usize,
            )
        }
    }
    /// The slot's room: how far a window may reach.
    pub fn cap(&self) -> u32 {
        self.cap
    }
    /// Changes the payload window (for writing a send slot).
    pub fn set_window(&mut self, off: u32, len: u32) {
        assert!(
            off as u64 + len as u64 <= self.cap as u64,
            "window outside slot"
        );
        self.off = off;
        self.len = len;
    }
}
