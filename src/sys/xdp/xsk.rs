//! An AF_XDP socket and its four rings.
//!
//! A UMEM is a region of our memory registered with the socket, cut into
//! equal chunks (here: one pool slot each). Frames live in chunks and
//! travel between us and the kernel by descriptor, in four single-producer,
//! single-consumer rings shared through `mmap`:
//!
//! | ring | producer | consumer | entry |
//! |---|---|---|---|
//! | fill | us: empty chunks the kernel may receive into | kernel | chunk address (`u64`) |
//! | RX | kernel: received frames | us | `xdp_desc` (address of the frame's first byte, length) |
//! | TX | us: frames to send | kernel | `xdp_desc` |
//! | completion | kernel: chunks whose frame was sent | us | chunk address |
//!
//! Each ring is an array of a power-of-two entries with a free-running
//! producer and consumer index (`u32`, masked on access). A producer writes
//! entries, then publishes its index with a release store; a consumer reads
//! the other side's index with an acquire load before it reads entries,
//! and publishes its own index (release) when it is done with them. The
//! `flags` word carries `XDP_RING_NEED_WAKEUP`: the kernel asks for a
//! system call (`poll`/`recvfrom` for fill, `sendto` for TX) before it goes
//! on (we bind with `XDP_USE_NEED_WAKEUP`, so a busy socket costs no
//! system call per batch).
//!
//! A chunk handed to the kernel (on fill or TX) is the kernel's until it
//! comes back (on RX or completion); the socket's owner tracks that.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// One mapped ring.
struct Ring<T> {
    map: NonNull<u8>,
    map_len: usize,
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    desc: NonNull<T>,
    mask: u32,
    /// Our copy of the index we own (producer or consumer).
    ours: u32,
    /// The other side's index as last read.
    theirs: u32,
}

impl<T: Copy> Ring<T> {
    /// Maps ring `pgoff` of `fd` with `entries` entries at `off`.
    /// `produce`: we produce on this ring (fill, TX), else we consume.
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        entries: u32,
        pgoff: u64,
        produce: bool,
    ) -> io::Result<Self> {
        let map_len = off.desc as usize + entries as usize * std::mem::size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring, at the offset the
        // kernel defines for it; no existing memory is touched. The result is
        // checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let map = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        // SAFETY: the offsets come from XDP_MMAP_OFFSETS for this mapping and
        // lie inside it; the kernel aligns them for their types.
        let at = |o: u64| unsafe { map.add(o as usize) };
        let producer: NonNull<AtomicU32> = at(off.producer).cast();
        let consumer: NonNull<AtomicU32> = at(off.consumer).cast();
        let flags: NonNull<AtomicU32> = at(off.flags).cast();
        let desc: NonNull<T> = at(off.desc).cast();
        // SAFETY: as above: the two indexes are live u32s in the mapping.
        let (prod, cons) = unsafe {
            (
                producer.as_ref().load(Ordering::Acquire),
                consumer.as_ref().load(Ordering::Acquire),
            )
        };
        let (ours, theirs) = if produce { (prod, cons) } else { (cons, prod) };
        Ok(Ring {
            map,
            map_len,
            producer,
            consumer,
            flags,
            desc,
            mask: entries - 1,
            ours,
            theirs,
        })
    }

    fn entries(&self) -> u32 {
        self.mask + 1
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: points into the live mapping (see `map`).
        unsafe { self.producer.as_ref() }
    }
    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as above.
        unsafe { self.consumer.as_ref() }
    }

    /// Whether the kernel asked for a wake-up.
    fn needs_wakeup(&self) -> bool {
        // SAFETY: as above.
        let f = unsafe { self.flags.as_ref() };
        f.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Entry `i` (free-running index).
    fn slot(&self, i: u32) -> *mut T {
        // SAFETY: masked, so inside the entries array of the mapping.
        unsafe { self.desc.as_ptr().add((i & self.mask) as usize) }
    }

    // -- as a producer (fill, TX): `ours` is the producer index --

    /// Free entries, reading the kernel's consumer index when needed.
    fn free(&mut self, want: u32) -> u32 {
        let free = self.entries() - self.ours.wrapping_sub(self.theirs);
        if free >= want {
            return free;
        }
        self.theirs = self.consumer().load(Ordering::Acquire);
        self.entries() - self.ours.wrapping_sub(self.theirs)
    }

    /// Writes one entry past the producer index (not yet published).
    fn push(&mut self, v: T) -> bool {
        if self.free(1) == 0 {
            return false;
        }
        // SAFETY: the entry is between the kernel's consumer index and our
        // unpublished producer index: the kernel does not read it until it
        // is published.
        unsafe { self.slot(self.ours).write(v) };
        self.ours = self.ours.wrapping_add(1);
        true
    }

    /// Publishes what was pushed.
    fn submit(&self) {
        self.producer().store(self.ours, Ordering::Release);
    }

    /// Entries pushed that the kernel has not consumed (as last read).
    fn pending(&mut self) -> u32 {
        self.theirs = self.consumer().load(Ordering::Acquire);
        self.ours.wrapping_sub(self.theirs)
    }

    // -- as a consumer (RX, completion): `ours` is the consumer index --

    /// Entries ready to read.
    fn ready(&mut self) -> u32 {
        let n = self.theirs.wrapping_sub(self.ours);
        if n > 0 {
            return n;
        }
        self.theirs = self.producer().load(Ordering::Acquire);
        self.theirs.wrapping_sub(self.ours)
    }

    /// Reads the `k`th ready entry.
    fn read(&self, k: u32) -> T {
        // SAFETY: k < ready(): the kernel published this entry (acquire
        // above) and will not touch it until we release it.
        unsafe { self.slot(self.ours.wrapping_add(k)).read() }
    }

    /// Gives `n` read entries back.
    fn release(&mut self, n: u32) {
        self.ours = self.ours.wrapping_add(n);
        self.consumer().store(self.ours, Ordering::Release);
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `map`; no reference into it
        // outlives the ring.
        unsafe { libc::munmap(self.map.as_ptr().cast(), self.map_len) };
    }
}

/// Sizes of a socket's rings (powers of two).
#[derive(Clone, Copy, Debug)]
pub struct RingSizes {
    /// Fill and completion rings.
    pub fill: u32,
    /// RX and TX rings.
    pub rxtx: u32,
}

/// The kernel's counters for one socket (`XDP_STATISTICS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XskStats {
    /// Frames dropped for other reasons than a full ring (e.g. too long).
    pub rx_dropped: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times a frame found the fill ring empty.
    pub fill_ring_empty: u64,
    /// TX descriptors the kernel refused (bad address or length).
    pub tx_invalid: u64,
    /// RX descriptors the kernel found invalid.
    pub rx_invalid: u64,
}

/// An AF_XDP socket bound to one queue of one interface, with its UMEM.
pub(crate) struct Xsk {
    fill: Ring<u64>,
    comp: Ring<u64>,
    rx: Ring<libc::xdp_desc>,
    tx: Ring<libc::xdp_desc>,
    fd: OwnedFd,
    zero_copy: bool,
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, v: &T) -> io::Result<()> {
    syscall!(setsockopt(
        fd,
        libc::SOL_XDP,
        opt,
        (v as *const T).cast(),
        std::mem::size_of::<T>() as libc::socklen_t
    ))
    .map(|_| ())
}

fn getsockopt<T: Default>(fd: RawFd, opt: libc::c_int) -> io::Result<T> {
    let mut v = T::default();
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    syscall!(getsockopt(
        fd,
        libc::SOL_XDP,
        opt,
        (&mut v as *mut T).cast(),
        &mut len
    ))?;
    Ok(v)
}

#[derive(Default)]
#[repr(C)]
struct Offsets([u64; 16]);

impl Offsets {
    fn ring(&self, k: usize) -> libc::xdp_ring_offset {
        let o = &self.0[k * 4..k * 4 + 4];
        libc::xdp_ring_offset {
            producer: o[0],
            consumer: o[1],
            desc: o[2],
            flags: o[3],
        }
    }
}

#[derive(Default)]
#[repr(C)]
struct Stats6([u64; 6]);

/// What [`Xsk::new`] got: the socket, and why zero-copy was refused.
pub(crate) type Bound = (Xsk, Option<String>);

impl Xsk {
    /// Opens an AF_XDP socket on `queue` of interface `ifindex`, registers
    /// `umem_len` bytes at `umem` as its UMEM in chunks of `chunk` bytes, maps
    /// its rings and binds it, zero-copy first, copy mode if the driver
    /// refuses (the reason is returned).
    ///
    /// # Safety
    ///
    /// `umem..umem + umem_len` must be memory the caller owns, page aligned,
    /// that stays mapped for as long as the socket lives, and whose chunks
    /// the caller hands to the kernel only through this socket's fill and
    /// TX rings (the kernel writes received frames into chunks on the fill
    /// ring, and reads chunks on the TX ring, until they come back).
    pub(crate) unsafe fn new(
        ifindex: u32,
        queue: u32,
        umem: *mut u8,
        umem_len: usize,
        chunk: u32,
        sizes: RingSizes,
        force_copy: bool,
    ) -> io::Result<Bound> {
        let mut tries = 0;
        loop {
            // SAFETY: forwarded from the caller.
            match unsafe { Self::open(ifindex, queue, umem, umem_len, chunk, sizes, force_copy) } {
                // A queue whose previous socket just closed is released
                // later (deferred): try again for a little while.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                r => return r,
            }
        }
    }

    /// One try of [`Xsk::new`].
    ///
    /// # Safety
    ///
    /// As [`Xsk::new`].
    unsafe fn open(
        ifindex: u32,
        queue: u32,
        umem: *mut u8,
        umem_len: usize,
        chunk: u32,
        sizes: RingSizes,
        force_copy: bool,
    ) -> io::Result<Bound> {
        let raw = syscall!(socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0))?;
        // SAFETY: a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let reg = libc::xdp_umem_reg {
            addr: umem as u64,
            len: umem_len as u64,
            chunk_size: chunk,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        // The kernel pins the region's pages; the caller keeps it mapped.
        setsockopt(raw, libc::XDP_UMEM_REG, &reg)?;
        setsockopt(raw, libc::XDP_UMEM_FILL_RING, &(sizes.fill as libc::c_int))?;
        setsockopt(
            raw,
            libc::XDP_UMEM_COMPLETION_RING,
            &(sizes.fill as libc::c_int),
        )?;
        setsockopt(raw, libc::XDP_RX_RING, &(sizes.rxtx as libc::c_int))?;
        setsockopt(raw, libc::XDP_TX_RING, &(sizes.rxtx as libc::c_int))?;
        let off: Offsets = getsockopt(raw, libc::XDP_MMAP_OFFSETS)?;
        let rx = Ring::map(
            raw,
            &off.ring(0),
            sizes.rxtx,
            libc::XDP_PGOFF_RX_RING as u64,
            false,
        )?;
        let tx = Ring::map(
            raw,
            &off.ring(1),
            sizes.rxtx,
            libc::XDP_PGOFF_TX_RING as u64,
            true,
        )?;
        let fill = Ring::map(
            raw,
            &off.ring(2),
            sizes.fill,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            true,
        )?;
        let comp = Ring::map(
            raw,
            &off.ring(3),
            sizes.fill,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            false,
        )?;
        let bind = |flags: u16| {
            let sa = libc::sockaddr_xdp {
                sxdp_family: libc::AF_XDP as u16,
                sxdp_flags: flags | libc::XDP_USE_NEED_WAKEUP,
                sxdp_ifindex: ifindex,
                sxdp_queue_id: queue,
                sxdp_shared_umem_fd: 0,
            };
            syscall!(bind(
                raw,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t
            ))
        };
        let why_copy = if force_copy {
            bind(libc::XDP_COPY)?;
            Some("copy mode asked for".to_string())
        } else {
            match bind(libc::XDP_ZEROCOPY) {
                Ok(_) => None,
                Err(zc) if zc.raw_os_error() == Some(libc::EBUSY) => return Err(zc),
                Err(zc) => {
                    bind(libc::XDP_COPY)?;
                    Some(format!("the driver refused zero-copy ({zc})"))
                }
            }
        };
        let opts: u32 = getsockopt(raw, libc::XDP_OPTIONS)?;
        let zero_copy = opts & libc::XDP_OPTIONS_ZEROCOPY != 0;
        Ok((
            Xsk {
                fill,
                comp,
                rx,
                tx,
                fd,
                zero_copy,
            },
            why_copy,
        ))
    }

    /// The socket's descriptor (for the XSKMAP and `poll`).
    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Room on the fill ring.
    pub(crate) fn fill_free(&mut self) -> u32 {
        self.fill.free(u32::MAX)
    }

    /// Puts a chunk's address on the fill ring (published by
    /// [`Xsk::fill_submit`]); false when the ring is full.
    pub(crate) fn fill(&mut self, addr: u64) -> bool {
        self.fill.push(addr)
    }

    /// Publishes the fill ring.
    pub(crate) fn fill_submit(&self) {
        self.fill.submit();
    }

    /// Received frames ready to read.
    pub(crate) fn rx_ready(&mut self) -> u32 {
        self.rx.ready()
    }

    /// The `k`th ready frame: its address in the UMEM and its length.
    pub(crate) fn rx_read(&self, k: u32) -> (u64, u32) {
        let d = self.rx.read(k);
        (d.addr, d.len)
    }

    /// Gives `n` read RX entries back to the kernel.
    pub(crate) fn rx_release(&mut self, n: u32) {
        self.rx.release(n);
    }

    /// Room on the TX ring.
    pub(crate) fn tx_free(&mut self) -> u32 {
        self.tx.free(u32::MAX)
    }

    /// Queues a frame of `len` bytes at UMEM address `addr` for sending.
    pub(crate) fn tx(&mut self, addr: u64, len: u32) -> bool {
        self.tx.push(libc::xdp_desc {
            addr,
            len,
            options: 0,
        })
    }

    /// Publishes the TX ring and, if the kernel asks (always in copy mode,
    /// where the copy happens in the call), kicks it. Returns the frames
    /// still waiting on the ring.
    pub(crate) fn tx_submit(&mut self) -> io::Result<u32> {
        self.tx.submit();
        // Copy mode sends a bounded batch per call: call again while it
        // makes progress.
        let mut last = u32::MAX;
        loop {
            let pending = self.tx.pending();
            if pending == 0 || pending == last {
                return Ok(pending);
            }
            if !self.zero_copy || self.tx.needs_wakeup() {
                match syscall!(sendto(
                    self.fd.as_raw_fd(),
                    std::ptr::null(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null(),
                    0
                )) {
                    Ok(_) => {}
                    Err(e) => match e.raw_os_error() {
                        // Busy or out of buffers: the frames stay queued.
                        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => {}
                        _ => return Err(e),
                    },
                }
            } else {
                return Ok(pending);
            }
            last = pending;
        }
    }

    /// Sent frames whose chunks are back.
    pub(crate) fn comp_ready(&mut self) -> u32 {
        self.comp.ready()
    }

    /// The `k`th completed chunk address.
    pub(crate) fn comp_read(&self, k: u32) -> u64 {
        self.comp.read(k)
    }

    /// Gives `n` completion entries back.
    pub(crate) fn comp_release(&mut self, n: u32) {
        self.comp.release(n);
    }

    /// Whether receiving waits for a wake-up call (the fill ring ran dry).
    pub(crate) fn rx_needs_wakeup(&self) -> bool {
        self.fill.needs_wakeup()
    }

    /// Wakes the kernel's receive side (a non-blocking `recvfrom`).
    pub(crate) fn rx_wakeup(&self) {
        let _ = syscall!(recvfrom(
            self.fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut()
        ));
    }

    /// The kernel's counters for this socket.
    pub(crate) fn stats(&self) -> io::Result<XskStats> {
        let s: Stats6 = getsockopt(self.fd.as_raw_fd(), libc::XDP_STATISTICS)?;
        Ok(XskStats {
            rx_dropped: s.0[0],
            rx_invalid: s.0[1],
            tx_invalid: s.0[2],
            rx_ring_full: s.0[3],
            fill_ring_empty: s.0[4],
        })
    }
}
