//! Anonymous, page-aligned memory for the arena and the buffer ring.

use std::io;
use std::ptr::NonNull;

/// Anonymous, page-aligned, zeroed memory from `mmap`.
pub(super) struct Mapping {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
    /// Never unmapped: the kernel may still write into it.
    pub(super) leaked: bool,
}

impl Mapping {
    pub(super) fn new(len: usize) -> io::Result<Self> {
        let len = len.max(1).next_multiple_of(page_size());
        // SAFETY: an anonymous private mapping with no address hint touches no
        // existing memory; the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Mapping {
            ptr,
            len,
            leaked: false,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: ptr/len are exactly what mmap returned; nothing refers to
        // the mapping any more (see the module doc on how long the kernel
        // holds a buffer: the uring driver is dropped, and has drained, first).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}
