//! # udpring
//!
//! A zero-copy, high-throughput UDP packet engine for Linux.
//!
//! - **Backends**: `uring` (io_uring multishot `RecvMsgMulti` into a
//!   registered provided-buffer ring, many sends per submit), `mmsg`
//!   (`recvmmsg`/`sendmmsg` batches) and `simple` (one syscall per datagram,
//!   the baseline). The kernel is probed at start; without io_uring the
//!   engine falls back to `mmsg` and says why ([`Engine::fallback_reason`]).
//!   And `xdp` ([`Backend::Xdp`]): AF_XDP sockets per worker and receive
//!   queue, frames parsed and built by [`frame`], for a real interface
//!   (root; [`Config::xdp_iface`]). `UDPRING_BACKEND=uring|mmsg|simple|xdp`
//!   forces one.
//! - **Workers**: [`Config::workers`] threads (one by default; 0 for one
//!   per CPU), each with its own `SO_REUSEPORT` socket(s), ring, buffers
//!   and [`Handler`] instance; pinned to CPUs only when asked
//!   ([`Config::pin`]).
//! - **Zero copy**: a [`Datagram`] lends its payload as a slice of the
//!   receive buffer; [`Transport::reply`] sends it back from that buffer.
//!   GRO trains arrive as one buffer and go back as one GSO send.
//! - **Safe to expose**: loop and reflection guards, an allowlist and a
//!   per-source rate limit before any handler sees a datagram ([`Guard`]).
//! - **Accounting**: every buffer taken from the pool comes back
//!   ([`Stats::slots_out`] is zero once a worker has been idle for 50
//!   ms); counters in the kernel's units match `/proc/net/snmp` and
//!   `SO_MEMINFO`.
//!
//! ## An echo server in a few lines
//!
//! ```
//! use udpring::{Config, Datagram, Engine, Handler, Transport};
//!
//! struct Echo;
//!
//! impl Handler for Echo {
//!     fn on_datagram(&mut self, dgram: Datagram<'_>, tx: &mut Transport<'_>) {
//!         // From the same buffer: no copy. Err only if the send queue is
//!         // full, and the engine counts that.
//!         let _ = tx.reply(dgram);
//!     }
//! }
//!
//! let engine = Engine::start(Config::new("127.0.0.1:0".parse()?), |_worker| Echo)?;
//!
//! let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
//! client.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
//! client.send_to(b"hello", engine.local_addr())?;
//! let mut buf = [0u8; 16];
//! let (n, _) = client.recv_from(&mut buf)?;
//! assert_eq!(&buf[..n], b"hello");
//!
//! let stats = engine.stop()?;
//! assert_eq!((stats.received, stats.sent, stats.slots_out), (1, 1, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Writing a service
//!
//! `examples/kv.rs` is a key-value responder (`SET key value [ttl_ms]`,
//! `GET key`, `DEL key`, one datagram each way) with state every worker
//! shares and entries that expire. Its parts, in the order a service is
//! built:
//!
//! **A handler per worker.** [`Engine::start`] calls the factory once per
//! worker, on that worker's thread; whatever the handlers share, they share
//! through the factory's captures (here an `Arc<RwLock<HashMap>>`: readers
//! in parallel). What each worker must own alone (a channel's receiving
//! end, a shard), [`Engine::start_each`] hands over without a lock.
//!
//! ```ignore
//! let table = Table::default();
//! let cfg = Config::builder(bind).workers(workers).build()?;   // typed errors
//! let engine = Engine::start(cfg, move |i| Kv::new(table.clone(), i == 0))?;
//! ```
//!
//! **Answering.** `on_datagram` gets the datagram lent from the receive
//! ring: read it, build the reply into a buffer the handler keeps (no
//! allocation per request), and queue it with [`Transport::reply_with`]
//! (one copy into a send slot; no system call: the worker submits the
//! batch when the handler returns). It answers from the address the
//! request was sent to, which matters on a host with several addresses
//! and a wildcard bind: clients that check the source (connected sockets,
//! resolvers) drop an answer from another one. `Ok` means queued in a bounded queue that
//! will be sent or counted; `Err` means nothing was queued
//! ([`SendError`]: too large for a slot, no slot or queue room, wrong
//! family), and the engine counts it too. Never block in a handler: the
//! socket backs up and the kernel drops what does not fit
//! ([`Stats::kernel_drops`]).
//!
//! ```ignore
//! fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
//!     self.answer(d.payload());                      // into self.reply
//!     let _ = tx.reply_with(&d, &self.reply);
//! }
//! ```
//!
//! **Which send when.** Every send queues; the worker submits the batch
//! when the handler returns. `Ok` means queued in a bounded queue that
//! will be sent or counted (`send_errors`, `cancelled`); `Err` means
//! nothing was queued and nothing is held: [`SendError::Exhausted`] (no
//! free send slot: counted in `send_exhausted`), [`SendError::TooLarge`]
//! (over a slot or the largest datagram), [`SendError::AddressFamily`]
//! (an IPv6 destination for an IPv4 socket), [`SendError::NoSuchSocket`].
//! A [`Sender`] answers `io::Error` (a full inbox is `WouldBlock`).
//!
//! | call | bytes | to | from |
//! |---|---|---|---|
//! | [`Transport::reply`] | the datagram's own buffer, no copy | its source | the address it was sent to, the socket it came on |
//! | [`Transport::reply_with`] | `data`, copied at the call | its source | the address it was sent to |
//! | [`Transport::reply_in_place`] | built in a send slot by a closure that returns the length, no copy | its source | the address it was sent to |
//! | [`Transport::forward`] | the datagram's own buffer, no copy (call it again per destination) | `to` | the kernel's choice for `to` |
//! | [`Transport::send_to`] | `data`, copied at the call | `to` | the kernel's choice |
//! | [`Transport::send_with`] | built in a send slot, no copy | `to` | the kernel's choice |
//! | [`Sender::send_to`] (other threads) | `data`, copied into the worker's inbox | `to` | the kernel's choice |
//!
//! A lent buffer (`reply`, `forward`) is read when the batch goes, after
//! the handler returns: bytes written with [`Datagram::payload_mut`] after
//! the call are what every queued send of it carries. A copy is taken at
//! the call.
//!
//! **One send for many.** When the batch goes, datagrams of up to 512
//! bytes queued one after another to one destination with one size (the
//! replies to a client that sent a burst) are copied into one send slot
//! and go as one `UDP_SEGMENT` train: one trip through the kernel's send
//! path instead of one each, for a copy of a few hundred bytes. The
//! receiver gets each datagram as it was sent (a socket with `UDP_GRO`
//! may take them as one train). Counted in `Stats::coalesced`; off with
//! `Config::coalesce = false`; larger datagrams always go from their own
//! buffer.
//!
//! **Backpressure.** A handler that sends more than the send slots hold
//! (a fan-out to a thousand subscribers) gets [`SendError::Exhausted`]
//! for the rest, and [`Handler::on_writable`] as soon as slots come back:
//! it keeps where it stopped and resumes there.
//! `examples/sequenced_fanout.rs` delivers every copy, each with its
//! subscriber's own sequence number built in place, starting each
//! datagram's fan-out one subscriber further on so that a full backlog
//! (bounded, counted) costs everyone in turn.
//!
//! **Time.** [`Transport::call_every`] and [`Transport::call_later`] set
//! timers on the worker's own loop (no thread, no lock); the returned
//! [`TimerId`] cancels one. In kv, worker 0 sweeps expired entries every
//! 50 ms and reads check expiry as they go. A sweep need not be punctual,
//! so kv gives its timers a slack ([`Transport::set_timer_slack`]): they
//! may fire up to 25 ms late, which lets a parked worker (below) fire one
//! with the next datagram instead of waking for it.
//!
//! **Latency.** A worker with nothing to do sleeps in the kernel, and a
//! request that comes while it sleeps pays for waking it (on loopback a
//! few µs where idle CPUs poll before halting, ~30 µs where they halt at
//! once). At light load a `uring` worker with one socket parks
//! ([`Config::park`], on by default): it waits for the next datagram in
//! `recvmsg(2)` itself, whose wake-up costs less than `io_uring_enter`'s,
//! and answers with `sendto` in the handler's call, from the handler's
//! bytes: the two system calls of a blocking loop (counted:
//! [`Stats::parked_waits`]); a flood, a full send buffer, a [`Sender`],
//! the handler's next timer (past its slack) or 50 ms of nothing send it
//! back to the ring. [`Config::spin_us`] instead has it watch its ring for up
//! to that long before sleeping, so that a closed loop's next request is
//! taken without a wake-up: adaptive (empty spins shrink the window
//! until it stops; a worker whose CPU is shared stops spinning; an idle
//! one uses no CPU) and counted ([`Stats::spin_hits`]), it costs the CPU
//! while requests flow. [`Config::busy_poll`] never sleeps: a whole CPU
//! per worker. `udpring echo` spins 50 µs; the library does not unless
//! told. PERF.md measures each on hosts whose idle CPUs halt at once,
//! against a blocking socket loop running the same logic (its sweep
//! included): the kv example, parked, reads 1.02x its closed-loop p50
//! and 1.06-1.08x its CPU per request, with `spin_us` 50 0.38-0.43x p50
//! (1.00x when its CPU is taken) and 1.07-1.11x CPU, and in a flood
//! 0.88x its CPU per answer. Asked every 2 ms, so that each request
//! wakes it from idle, it reads ~1.08x p50 and ~1.3x CPU (1.15-1.2x and
//! 1.3-1.45x before it parked): the engine's own path per request,
//! touched cold after each wake-up. A release built with `lto = "fat"`
//! and `codegen-units = 1` spends ~0.03x less.
//!
//! **Bounds.** Anything a stranger can make a service keep or send must
//! have a limit: kv refuses keys past `MAX_KEYS` and values past
//! `MAX_LEN`, answers one source address at most `PER_SOURCE_RATE` times a
//! second ([`Guard::per_source_rate`]: a forged source cannot aim its
//! longest answers at a victim without bound) and answers junk with no
//! more bytes than it was sent. The
//! engine's own state is bounded the same way (slots, send queue,
//! [`Sender`] inbox, guard tables).
//!
//! **From other threads.** An engine's [`Sender`] sends through a worker,
//! posts a closure to run on it, or hands its handler a message
//! ([`Handler::on_message`]); its inbox is bounded and answers
//! `WouldBlock`, with a blocking and an async wait for room
//! (`examples/tokio_bridge.rs` bridges to tokio with no allocation per
//! message).
//!
//! **Async.** [`Engine::start_stream`] gives the engine as one stream of
//! owned datagrams per worker ([`Incoming::recv`], any runtime: wakers
//! only), each copied into a bounded, reused pool; [`Incoming::reply`]
//! answers from the address asked, and [`Sender::send_to_async`] waits
//! for room ([`Writable`]) instead of answering `WouldBlock`
//! (`examples/async_stream.rs` serves from tokio tasks).
//!
//! **Sockets handed in.** A service started by systemd's socket
//! activation, or given bound sockets by its parent, serves those:
//! [`os::listen_fds`] takes what the activator passed, and
//! [`Engine::start_on`] runs a worker on each, applying the rest of the
//! [`Config`] as to sockets of its own (`examples/socket_activation.rs`).
//!
//! **Stopping and failing.** [`Engine::stop`] returns the totals of every
//! worker. A handler that panics, or a loop that ends on an error once
//! running (the xdp backend's interface removed), stops its own worker in
//! order (the others go on); [`Engine::failures`] reports it,
//! [`Config::on_failure`] ([`FailureHook`]) is told at once, and `stop`
//! returns a [`StopError`] that still carries every total.
//!
//! **Errors.** Starting and a [`Sender`] give `io::Error`; a [`SendError`]
//! and a [`StopError`] convert into one, so `?` works across the whole API
//! in a function returning `io::Result` (a full send queue is
//! `WouldBlock`).
//!
//! ## Layout
//!
//! From the kernel up; each layer imports only those below it (the one
//! circle is inside `worker/`: a [`Sender`] posts closures that take a
//! [`Transport`], and a `Transport` hands out `Sender`s).
//!
//! | module | what |
//! |---|---|
//! | `limits`, `frame`, `stats`, `guard/`, `bufring` | the sizes; checked views of UDP frames ([`frame`]); every counter, named once; the loop and reflection guards; the slot arena, the provided-buffer ring and slot accounting |
//! | `sys/` | every kernel call: addresses, control messages, socket options, the error queue, the io_uring ring, `recvmmsg` headers, AF_XDP (`xdp/`); the records both backends exchange with the worker (`RecvMeta`, `Transmit`) |
//! | `config`, `socket`, `error`, `os` | what to run; the sockets it opens; [`ErrorEvent`] and [`SendError`]; what a program needs beside the engine (canonical addresses, CPUs, socket options) |
//! | `worker/` | one worker as its handler sees it: [`Handler`], [`Datagram`], [`Transport`], [`Sender`], and the state behind them (`Core`, the send queue, timers) |
//! | `backend/` | `worker` (calls the handler and decides what a send's outcome means), the loops side by side (`uring`, `mmsg`, `xdp`), the written contract they meet, the probe and the choice; one datagram's path, file by file |
//! | `engine` | [`Engine`]: sockets, worker threads, start and stop |

#![warn(missing_docs)]

mod backend;
mod bufring;
mod config;
mod engine;
mod error;
pub mod frame;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod limits;
pub mod metrics;
pub mod os;
mod socket;
mod stats;
mod sys;
mod worker;

pub use backend::{BACKEND_ENV, choose_backend, uring_support, uring_tx_timestamps};
pub use config::{
    Backend, Config, ConfigBuilder, ConfigError, DEFAULT_SLOT_SIZE, FailureHook, GRO_SLOT_SIZE,
    Join, Multicast, SocketSetup, XDP_SLOT_SIZE, XdpMode,
};
pub use engine::{Engine, StopError, StopHandle};
pub use error::{ErrorEvent, SendError};
pub use guard::{Cidr, Guard, MARK_HOPS, MARK_SPAN, REFLECTOR_PORTS, RateLimit, is_marked};
pub use limits::{HEADROOM, MAX_UDP_PAYLOAD, MAX_UDP6_PAYLOAD};
pub use socket::SocketInfo;
pub use stats::{Stats, errno_name};
pub use sys::mcast::{Interface, McastError, if_index as interface_index};
pub use worker::datagram::Datagram;
pub use worker::handler::Handler;
pub use worker::ids::{Ecn, SocketId, SocketRef};
pub use worker::sendbuf::SendBuf;
pub use worker::sender::{Sender, Writable};
pub use worker::stream::{Incoming, Received};
pub use worker::timers::TimerId;
pub use worker::transport::Transport;

/// The README's example, compiled as a doctest (not run: it serves until
/// a signal).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

/// Clean stops for programs on the engine: SIGINT, SIGTERM and SIGHUP set
/// a flag instead of killing the process, so a service can stop its
/// engine and report its totals. [`wait`](signals::wait) sleeps until then
/// (the flag comes with a pipe the handler writes to, so no thread has to
/// wake to look at it); [`fd`](signals::fd) is that pipe, to poll beside
/// descriptors of your own.
///
/// ```no_run
/// udpring::signals::install()?;
/// // ... start the engine ...
/// udpring::signals::wait(None); // until SIGINT, SIGTERM or SIGHUP
/// # Ok::<(), std::io::Error>(())
/// ```
pub mod signals {
    pub use crate::sys::signal::{
        install_stop_signals as install, request_stop as request, stop_fd as fd,
        stop_signalled as requested, wait_stop as wait,
    };
}

/// A random 64-bit number from the kernel (`getrandom(2)`), never 0: for
/// run tokens and request IDs that strangers on the network must not guess.
pub fn random_u64() -> u64 {
    sys::random::u64()
}
