//! The engine as an async stream of owned datagrams, for any runtime:
//! [`crate::Engine::start_stream`] runs a handler on each worker that
//! copies each datagram into a buffer of a bounded per-worker pool and
//! queues it for that worker's [`Incoming`]; [`Incoming::recv`] is a
//! future (wakers only: no runtime inside the engine). Answers go back
//! with [`Incoming::reply`] (one `sendmsg` from the calling thread, from
//! the address the request was sent to) or through the worker's
//! [`crate::Sender`] ([`crate::Sender::send_to_async`] waits for room).
//!
//! The cost beside the handler API is one copy per datagram and a queue
//! hop between threads. Bounded: at most `depth` datagrams wait per
//! worker, in at most `depth` buffers allocated once and reused (no
//! allocation per datagram once warm); a datagram that finds the queue
//! full is dropped and counted ([`Incoming::dropped`]), as the kernel
//! counts a full socket.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use crate::worker::datagram::Datagram;
use crate::worker::handler::Handler;
use crate::worker::sender::Sender;
use crate::worker::transport::Transport;

/// What a worker's handler and its [`Incoming`] share.
pub(crate) struct StreamShared {
    state: Mutex<State>,
    depth: usize,
    dropped: AtomicU64,
}

struct State {
    queue: VecDeque<Received>,
    /// Buffers of datagrams the consumer dropped, for the next ones.
    free: Vec<Vec<u8>>,
    /// Buffers made so far (at most `depth`).
    made: usize,
    waker: Option<Waker>,
    closed: bool,
}

impl StreamShared {
    pub(crate) fn new(depth: usize) -> Arc<StreamShared> {
        Arc::new(StreamShared {
            state: Mutex::new(State {
                queue: VecDeque::with_capacity(depth),
                free: Vec::with_capacity(depth),
                made: 0,
                waker: None,
                closed: false,
            }),
            depth,
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A datagram taken from the engine: its bytes (a copy, owned), where it
/// came from and where an answer should leave from. Its buffer goes back
/// to the worker's pool when it is dropped.
pub struct Received {
    bytes: Vec<u8>,
    source: SocketAddr,
    answer_from: Option<IpAddr>,
    socket: usize,
    segment_size: Option<u16>,
    /// Its worker's pool (weak: a datagram still queued when the engine
    /// goes must not keep the queue alive).
    home: Weak<StreamShared>,
}

impl Received {
    /// The payload (for a GRO train, all segments back to back).
    pub fn payload(&self) -> &[u8] {
        &self.bytes
    }
    /// Who sent it.
    pub fn source(&self) -> SocketAddr {
        self.source
    }
    /// The address an answer should leave from (see
    /// [`crate::Datagram::answer_from`]).
    pub fn answer_from(&self) -> Option<IpAddr> {
        self.answer_from
    }
    /// The worker's socket it arrived on.
    pub fn socket(&self) -> usize {
        self.socket
    }
    /// With GRO, the size of each segment of a train.
    pub fn segment_size(&self) -> Option<u16> {
        self.segment_size
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        if let Some(home) = self.home.upgrade() {
            let buf = std::mem::take(&mut self.bytes);
            home.lock().free.push(buf);
        }
    }
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("len", &self.bytes.len())
            .field("source", &self.source)
            .field("answer_from", &self.answer_from)
            .field("socket", &self.socket)
            .finish()
    }
}

/// The handler [`crate::Engine::start_stream`] runs on each worker.
pub(crate) struct StreamHandler {
    pub(crate) shared: Arc<StreamShared>,
}

impl Handler for StreamHandler {
    fn on_datagram(&mut self, d: Datagram<'_>, _tx: &mut Transport<'_>) {
        let waker = {
            let mut st = self.shared.lock();
            let buf = if st.queue.len() >= self.shared.depth {
                None
            } else if let Some(b) = st.free.pop() {
                Some(b)
            } else if st.made < self.shared.depth {
                st.made += 1;
                Some(Vec::with_capacity(d.payload().len()))
            } else {
                None
            };
            let Some(mut bytes) = buf else {
                drop(st);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            };
            bytes.clear();
            bytes.extend_from_slice(d.payload());
            st.queue.push_back(Received {
                bytes,
                source: d.source(),
                answer_from: d.answer_from(),
                socket: d.socket(),
                segment_size: d.segment_size(),
                home: Arc::downgrade(&self.shared),
            });
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    fn on_stop(&mut self) {
        let waker = {
            let mut st = self.shared.lock();
            st.closed = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// One worker's datagrams, as they come: [`Incoming::recv`] waits for the
/// next. `None` once the worker has stopped and everything queued was
/// taken.
pub struct Incoming {
    shared: Arc<StreamShared>,
    sender: Sender,
    worker: usize,
}

impl Incoming {
    pub(crate) fn new(shared: Arc<StreamShared>, sender: Sender, worker: usize) -> Incoming {
        Incoming {
            shared,
            sender,
            worker,
        }
    }

    /// The next datagram, or `None` once the worker stopped; `Pending`
    /// (the waker kept) while none has come.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let mut st = self.shared.lock();
        if let Some(d) = st.queue.pop_front() {
            return Poll::Ready(Some(d));
        }
        if st.closed {
            return Poll::Ready(None);
        }
        match &st.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => st.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next datagram (`None` once the worker stopped).
    pub async fn recv(&mut self) -> Option<Received> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next datagram if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        self.shared.lock().queue.pop_front()
    }

    /// Answers `d` with `data`: to its source, on the socket it came on,
    /// from the address it was sent to; one `sendmsg` from the calling
    /// thread ([`Sender::send_now_from`]: `WouldBlock` when the socket's
    /// send buffer is full).
    pub fn reply(&self, d: &Received, data: &[u8]) -> io::Result<()> {
        self.sender
            .send_now_from(d.socket, data, d.source, d.answer_from)
    }

    /// [`Incoming::reply`] without `WouldBlock`: when the socket's send
    /// buffer is full, the answer goes through the worker's inbox, waiting
    /// there for room ([`Sender::send_from_async`]).
    pub async fn reply_async(&self, d: &Received, data: &[u8]) -> io::Result<()> {
        self.sender
            .send_from_async(d.socket, data, d.source, d.answer_from)
            .await
    }

    /// The worker this stream is (its index).
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// The worker's [`Sender`], for sends batched with the worker's own.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// Datagrams dropped because `depth` were waiting already.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}
