//! A global allocator that counts allocations (and reallocations), in all
//! and per thread. A test binary that wants it declares
//! `#[global_allocator] static A: util::counting::Counting = util::counting::Counting;`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting.
pub struct Counting;

static ALL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static MINE: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    ALL.fetch_add(1, Ordering::Relaxed);
    MINE.with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards every call to the system allocator unchanged; the
// counters are a static atomic and a const-initialised thread-local (no
// allocation to reach either).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

/// Allocations so far, every thread.
pub fn total() -> u64 {
    ALL.load(Ordering::SeqCst)
}

/// Allocations so far on the calling thread.
pub fn this_thread() -> u64 {
    MINE.with(|c| c.get())
}
