//! Sending from other threads: a worker's inbox and the [`Sender`] handle
//! that posts into it.
//!
//! The inbox is bounded ([`crate::Config::sender_queue`] items). A full
//! inbox answers `WouldBlock`; the caller can wait for room, blocking
//! ([`Sender::wait_writable`]) or as a future ([`Sender::writable`], for
//! any async runtime). Datagram buffers are recycled: once every buffer
//! has grown to the largest datagram sent, posting allocates nothing. The
//! worker is woken (an eventfd its loop watches) only when the inbox goes
//! from empty to not empty, so a burst costs one wake-up. It moves
//! datagrams into send slots while slots are free; what waits, waits in
//! the inbox, so `Ok` always means "will be sent" (or counted as refused by
//! the kernel, like any send).

use std::any::Any;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU16;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sys::{self, EventFd, SrcIp};
use crate::worker::ids::SocketRef;
use crate::worker::transport::Transport;

/// Work for a worker, posted from another thread.
pub(crate) enum Item {
    /// A datagram to copy into a send slot.
    Datagram {
        data: Vec<u8>,
        to: SocketAddr,
        sock: u16,
        segment: Option<NonZeroU16>,
        /// The source address asked for (an answer from another thread).
        src: SrcIp,
    },
    /// A closure to run on the worker.
    Post(Box<dyn FnOnce(&mut Transport<'_>) + Send>),
    /// A message for `Handler::on_message`.
    Message(Box<dyn Any + Send>),
}

pub(crate) struct InboxState {
    pub queue: VecDeque<Item>,
    /// Datagram buffers given back, to be reused.
    free: Vec<Vec<u8>>,
    /// Futures waiting for room.
    wakers: Vec<Waker>,
}

/// What a worker's `Sender`s share with it.
pub(crate) struct Inbox {
    state: Mutex<InboxState>,
    pub(crate) wake: EventFd,
    capacity: usize,
    /// Largest datagram (or train) a send slot holds.
    slot_payload: usize,
    /// Whether each socket of the worker is IPv6.
    sock_v6: Vec<bool>,
    pub(crate) closed: AtomicBool,
    /// A [`Sender`] was made for this worker: its posts wake the worker
    /// through the eventfd, which a worker parked in `recvmsg` would not
    /// see, so the worker no longer parks.
    had_sender: AtomicBool,
    room: Condvar,
    /// Items in the queue (kept under the lock; read without it).
    queued: std::sync::atomic::AtomicUsize,
    /// The worker's sockets, for [`Sender::send_now`]; emptied (under the
    /// write lock) before the worker closes them, so a direct send never
    /// reaches a closed or reused descriptor.
    direct_fds: std::sync::RwLock<Vec<std::os::fd::RawFd>>,
    /// What direct sends put on the wire: datagrams, bytes.
    pub(crate) direct_sent: std::sync::atomic::AtomicU64,
    pub(crate) direct_bytes: std::sync::atomic::AtomicU64,
}

impl Inbox {
    pub(crate) fn new(
        capacity: usize,
        slot_payload: usize,
        sock_v6: Vec<bool>,
        fds: Vec<std::os::fd::RawFd>,
    ) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Inbox {
            state: Mutex::new(InboxState {
                queue: VecDeque::with_capacity(capacity),
                free: Vec::new(),
                wakers: Vec::new(),
            }),
            wake: EventFd::new()?,
            capacity,
            slot_payload,
            sock_v6,
            closed: AtomicBool::new(false),
            had_sender: AtomicBool::new(false),
            room: Condvar::new(),
            queued: std::sync::atomic::AtomicUsize::new(0),
            direct_fds: std::sync::RwLock::new(fds),
            direct_sent: std::sync::atomic::AtomicU64::new(0),
            direct_bytes: std::sync::atomic::AtomicU64::new(0),
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a [`Sender`] was ever made for this worker.
    pub(crate) fn had_sender(&self) -> bool {
        self.had_sender.load(Ordering::Acquire)
    }

    /// Whether anything waits (no lock taken: the worker asks once per
    /// loop).
    pub(crate) fn pending(&self) -> bool {
        self.queued.load(Ordering::Acquire) > 0
    }

    /// Takes the front item, if `take` says so (under the lock).
    pub(crate) fn pop_if(&self, take: impl FnOnce(&Item) -> bool) -> Option<Item> {
        let mut st = self.lock();
        let front = st.queue.front()?;
        if !take(front) {
            return None;
        }
        let item = st.queue.pop_front();
        self.queued.store(st.queue.len(), Ordering::Release);
        item
    }

    /// A datagram buffer goes back for reuse.
    pub(crate) fn recycle(&self, mut data: Vec<u8>) {
        data.clear();
        let mut st = self.lock();
        if st.free.len() < self.capacity {
            st.free.push(data);
        }
    }

    /// The worker took items: wake whoever waits for room.
    pub(crate) fn made_room(&self) {
        let wakers = std::mem::take(&mut self.lock().wakers);
        for w in wakers {
            w.wake();
        }
        self.room.notify_all();
    }

    /// The worker stopped: every waiter learns it, and direct sends end
    /// before its sockets close.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.direct_fds
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.made_room();
    }

    fn push(&self, make: impl FnOnce(&mut Vec<Vec<u8>>) -> Item) -> io::Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(stopped());
        }
        let was_empty = {
            let mut st = self.lock();
            if st.queue.len() >= self.capacity {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the worker's send queue is full",
                ));
            }
            let item = make(&mut st.free);
            st.queue.push_back(item);
            self.queued.store(st.queue.len(), Ordering::Release);
            st.queue.len() == 1
        };
        if was_empty {
            self.wake.notify();
        }
        Ok(())
    }
}

fn stopped() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the worker has stopped")
}

/// A thread-safe handle that sends through one worker, posts work to it,
/// or hands its handler messages.
///
/// Costs: a datagram is copied twice (into the inbox, then into a send
/// slot by the worker) and takes the inbox's lock; the worker is woken once
/// per burst (an eventfd write when the inbox was empty). Datagram buffers
/// are reused: no allocation once they have grown. [`Sender::post`] and
/// [`Sender::message`] allocate one box each. For the fast path, send from
/// the handler ([`crate::Transport`]).
#[derive(Clone)]
pub struct Sender {
    inbox: Arc<Inbox>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("closed", &self.inbox.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl Sender {
    pub(crate) fn new(inbox: Arc<Inbox>) -> Self {
        inbox.had_sender.store(true, Ordering::Release);
        Sender { inbox }
    }

    /// Queues `data` for `to`, from the worker's first socket. `Ok`: it
    /// will be copied into a send slot and sent (what the kernel then says
    /// is counted like any send). Errors: `WouldBlock` when the inbox is
    /// full (wait with [`Sender::wait_writable`] or [`Sender::writable`]),
    /// `InvalidInput` when it cannot be sent at all (larger than a send
    /// slot, an IPv6 destination for an IPv4 socket), `NotConnected` once
    /// the worker has stopped.
    pub fn send_to(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        self.send(0, data, to, None)
    }

    /// Like [`Sender::send_to`], from the worker's socket `sock`.
    pub fn send_to_via(&self, sock: impl SocketRef, data: &[u8], to: SocketAddr) -> io::Result<()> {
        let sock = sock.index();
        self.send(sock, data, to, None)
    }

    /// Like [`Sender::send_to`], as a GSO train of `segment`-byte datagrams
    /// (see [`crate::Transport::send_segments`]).
    pub fn send_segments(&self, data: &[u8], segment: u16, to: SocketAddr) -> io::Result<()> {
        self.send(0, data, to, NonZeroU16::new(segment))
    }

    /// [`Sender::send_to_via`] from the source address `from` (see
    /// [`Sender::send_now_from`]), batched with the worker's sends:
    /// `WouldBlock` when the inbox is full.
    pub fn send_to_from(
        &self,
        sock: impl SocketRef,
        data: &[u8],
        to: SocketAddr,
        from: Option<IpAddr>,
    ) -> io::Result<()> {
        let sock = sock.index();
        let v6 = self.sock_v6(sock)?;
        let src = src_for(sys::canonical(to), from, v6)?;
        self.send_src(sock, data, to, None, src)
    }

    /// An answer from another thread, asynchronously: sent at once from
    /// the calling thread ([`Sender::send_now_from`]); if the socket's
    /// buffer is full, through the worker's inbox ([`Sender::send_to_from`]),
    /// waiting for room there. So no `WouldBlock` reaches the caller.
    pub async fn send_from_async(
        &self,
        sock: impl SocketRef,
        data: &[u8],
        to: SocketAddr,
        from: Option<IpAddr>,
    ) -> io::Result<()> {
        let sock = sock.index();
        match self.send_now_from(sock, data, to, from) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            r => return r,
        }
        loop {
            match self.send_to_from(sock, data, to, from) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                r => return r,
            }
        }
    }

    fn send(
        &self,
        sock: usize,
        data: &[u8],
        to: SocketAddr,
        segment: Option<NonZeroU16>,
    ) -> io::Result<()> {
        self.send_src(sock, data, to, segment, SrcIp::Any)
    }

    /// Whether the worker's socket `sock` is IPv6; an error if it has none.
    fn sock_v6(&self, sock: usize) -> io::Result<bool> {
        self.inbox.sock_v6.get(sock).copied().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("the worker has no socket {sock}"),
            )
        })
    }

    fn send_src(
        &self,
        sock: usize,
        data: &[u8],
        to: SocketAddr,
        segment: Option<NonZeroU16>,
        src: SrcIp,
    ) -> io::Result<()> {
        let invalid = |why: String| Err(io::Error::new(io::ErrorKind::InvalidInput, why));
        let v6 = self.sock_v6(sock)?;
        let max = if segment.is_some() {
            self.inbox.slot_payload
        } else {
            self.inbox.slot_payload.min(crate::limits::MAX_UDP_PAYLOAD)
        };
        if data.len() > max {
            return invalid(format!(
                "{} bytes: larger than a send slot holds ({max}; Config::slot_size)",
                data.len()
            ));
        }
        let to = sys::canonical(to);
        if to.is_ipv6() && !v6 {
            return invalid(format!("{to}: an IPv6 destination for an IPv4 socket"));
        }
        self.inbox.push(|free| {
            let mut buf = free.pop().unwrap_or_default();
            buf.extend_from_slice(data);
            Item::Datagram {
                data: buf,
                to,
                sock: sock as u16,
                segment,
                src,
            }
        })
    }

    /// Sends `data` to `to` now, from the calling thread, on the worker's
    /// socket `sock` (0 for the first): one `sendto` system call, no copy in
    /// userspace, no wake-up of the worker (the lowest latency from another
    /// thread; [`Sender::send_to`] instead batches with the worker's sends).
    /// Counted in the worker's `sent`. `WouldBlock` when the socket's send
    /// buffer is full; the kernel's other refusals come back as they are;
    /// `NotConnected` once the worker has stopped.
    pub fn send_now(&self, sock: impl SocketRef, data: &[u8], to: SocketAddr) -> io::Result<()> {
        let sock = sock.index();
        self.send_now_from(sock, data, to, None)
    }

    /// [`Sender::send_now`] from the source address `from`: the answer to
    /// a datagram goes from [`crate::Datagram::answer_from`], so that a
    /// client that asked one of several addresses of this host gets its
    /// answer from that one. With `Some`, one `sendmsg` with an
    /// `IP_PKTINFO`/`IPV6_PKTINFO` control message; with `None`, as
    /// `send_now`.
    pub fn send_now_from(
        &self,
        sock: impl SocketRef,
        data: &[u8],
        to: SocketAddr,
        from: Option<IpAddr>,
    ) -> io::Result<()> {
        let sock = sock.index();
        let fds = self
            .inbox
            .direct_fds
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let (Some(&fd), Some(&v6)) = (fds.get(sock), self.inbox.sock_v6.get(sock)) else {
            return Err(if fds.is_empty() {
                stopped()
            } else {
                io::Error::new(io::ErrorKind::InvalidInput, format!("no socket {sock}"))
            });
        };
        let to = sys::canonical(to);
        if to.is_ipv6() && !v6 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{to}: an IPv6 destination for an IPv4 socket"),
            ));
        }
        let src = src_for(to, from, v6)?;
        // The descriptor stays open while the read lock is held (see
        // `direct_fds`).
        sys::socket::send_from(fd, data, &sys::RawAddr::from_socket_addr(to, v6), src)?;
        self.inbox.direct_sent.fetch_add(1, Ordering::Relaxed);
        self.inbox
            .direct_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Runs `f` on the worker's thread, with its transport (in order among
    /// this Sender's datagrams and posts). Errors as [`Sender::send_to`].
    pub fn post(&self, f: impl FnOnce(&mut Transport<'_>) + Send + 'static) -> io::Result<()> {
        let f = Box::new(f);
        self.inbox.push(move |_| Item::Post(f))
    }

    /// Hands `msg` to the worker's handler ([`crate::Handler::on_message`]).
    pub fn message(&self, msg: impl Any + Send) -> io::Result<()> {
        let m = Box::new(msg);
        self.inbox.push(move |_| Item::Message(m))
    }

    /// Whether the worker has stopped (sends fail with `NotConnected`).
    pub fn is_closed(&self) -> bool {
        self.inbox.closed.load(Ordering::Acquire)
    }

    /// Blocks until the inbox has room (or `timeout` passes: `TimedOut`;
    /// or the worker stops: `NotConnected`).
    pub fn wait_writable(&self, timeout: Option<Duration>) -> io::Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.inbox.lock();
        loop {
            if self.is_closed() {
                return Err(stopped());
            }
            if st.queue.len() < self.inbox.capacity {
                return Ok(());
            }
            st = match deadline {
                None => self.inbox.room.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no room in time"));
                    }
                    self.inbox
                        .room
                        .wait_timeout(st, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// [`Sender::send_to`], waiting (asynchronously, on any runtime) for
    /// room in the worker's inbox when it is full instead of answering
    /// `WouldBlock`.
    pub async fn send_to_async(&self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        loop {
            match self.send_to(data, to) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                r => return r,
            }
        }
    }

    /// A future that resolves when the inbox has room (or with
    /// `NotConnected` when the worker stops): the async form of
    /// [`Sender::wait_writable`], for any runtime.
    pub fn writable(&self) -> Writable<'_> {
        Writable { sender: self }
    }
}

/// The source of a send to `to` from `from` on a socket of family `v6`.
fn src_for(to: SocketAddr, from: Option<IpAddr>, v6: bool) -> io::Result<SrcIp> {
    match from.map(|a| (a, v6)) {
        None => Ok(SrcIp::Any),
        Some((IpAddr::V4(a), false)) if to.is_ipv4() => Ok(SrcIp::V4(a)),
        Some((IpAddr::V4(a), true)) if to.is_ipv4() => Ok(SrcIp::V6(a.to_ipv6_mapped(), 0)),
        Some((IpAddr::V6(a), true)) if to.is_ipv6() => Ok(SrcIp::V6(a, 0)),
        Some((a, _)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{to}: cannot be sent from {a} (another family)"),
        )),
    }
}

/// See [`Sender::writable`].
#[must_use = "a future does nothing unless awaited"]
pub struct Writable<'a> {
    sender: &'a Sender,
}

impl Future for Writable<'_> {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let inbox = &self.sender.inbox;
        let mut st = inbox.lock();
        if inbox.closed.load(Ordering::Acquire) {
            return Poll::Ready(Err(stopped()));
        }
        if st.queue.len() < inbox.capacity {
            return Poll::Ready(Ok(()));
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
