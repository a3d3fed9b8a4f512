//! # udpring
//!
//! A zero-copy, high-throughput UDP packet engine for Linux.
//!
//! - **Backends**: `uring` (io_uring multishot `RecvMsgMulti` into a
//!   registered provided-buffer ring, many `SendMsg` per submit), `mmsg`
//!   (`recvmmsg`/`sendmmsg` batches) and `simple` (one syscall per datagram,
//!   the baseline). The kernel is probed at start; without io_uring the
//!   engine falls back to `mmsg` and says why ([`Engine::fallback_reason`]).
//!   `UDPRING_BACKEND=uring|mmsg|simple` forces one.
//! - **Workers**: one per CPU by default, each with its own `SO_REUSEPORT`
//!   socket, ring, buffers and [`Handler`] instance, pinned to its CPU.
//! - **Zero copy**: a [`Datagram`] lends its payload as a slice of the
//!   receive buffer; [`Transport::reply`] sends it back from that buffer.
//!   GRO trains arrive as one buffer and go back as one GSO send.
//! - **Accounting**: every buffer taken from the pool comes back;
//!   [`Stats::slots_out`] is zero whenever a worker is idle.
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
//!         tx.reply(dgram); // from the same buffer: no copy
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
//! ## Layout
//!
//! All code that calls the kernel lives in `sys` (and the io_uring backend
//! with it, in `sys::uring`); the buffer arena and ring live in `bufring`.
//! The backends' common contract is written down in `backend`.

pub mod apps;
mod backend;
mod bufring;
mod config;
mod engine;
mod handler;
mod stats;
mod sys;
mod worker;

pub use config::{Backend, Config, DEFAULT_SLOT_SIZE, GRO_SLOT_SIZE, Join, Multicast};
pub use engine::{BACKEND_ENV, Engine, SocketInfo, StopHandle, choose_backend, uring_support};
pub use handler::{Datagram, ErrorEvent, Handler, SendError, Sender, Transport};
pub use stats::{Stats, errno_name};
pub use sys::mcast::{Interface, McastError, if_index as interface_index};
pub use worker::HEADROOM;

/// Clean stops for command-line programs: SIGINT/SIGTERM set a flag.
pub mod signals {
    pub use crate::sys::{install_stop_signals as install, stop_signalled as requested};
}

/// Largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_UDP_PAYLOAD: usize = 65507;
/// Largest UDP payload over IPv6 without jumbograms (65535 - 8).
pub const MAX_UDP6_PAYLOAD: usize = 65527;
