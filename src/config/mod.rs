//! Engine configuration: [`Config`], made with [`Config::builder`] (or
//! [`Config::new`] and its public fields), checked into [`ConfigError`]s.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use crate::sys::mcast::Interface;
pub use crate::sys::xdp::XdpMode;
use std::str::FromStr;

use crate::bufring::HEADROOM;
use crate::guard::Guard;

/// How workers move datagrams (the contract every backend meets is written
/// down in the source, `src/backend/mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Backend {
    /// io_uring: multishot receive on a provided-buffer ring, batched sends.
    Uring,
    /// `recvmmsg`/`sendmmsg` in batches.
    Mmsg,
    /// One `recvmsg`/`sendmsg` per datagram: the baseline.
    Simple,
    /// AF_XDP: frames for the engine's ports skip the kernel's UDP stack,
    /// one XDP socket per worker and receive queue of the interface
    /// (`xdp_iface`, or the one the bound address lives on); root only.
    /// Not in [`Backend::ALL`]: it needs a network interface, not loopback.
    Xdp,
}

impl Backend {
    /// Every backend, fastest first.
    pub const ALL: [Backend; 3] = [Backend::Uring, Backend::Mmsg, Backend::Simple];

    /// The name used on the command line and in `UDPRING_BACKEND`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Mmsg => "mmsg",
            Backend::Simple => "simple",
            Backend::Xdp => "xdp",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "uring" | "io_uring" => Ok(Backend::Uring),
            "mmsg" => Ok(Backend::Mmsg),
            "simple" => Ok(Backend::Simple),
            "xdp" | "af_xdp" => Ok(Backend::Xdp),
            other => Err(format!(
                "unknown backend '{other}' (expected uring, mmsg, simple or xdp)"
            )),
        }
    }
}

/// Default slot size without GRO: a 4096-byte payload (a DNS answer with
/// EDNS0's common 4096-byte limit) plus headroom.
pub const DEFAULT_SLOT_SIZE: usize = 4096 + HEADROOM;
/// Slot size with GRO: a whole 64 KiB train plus headroom.
pub const GRO_SLOT_SIZE: usize = 65536 + HEADROOM;
/// The `xdp` backend's slot size: one UMEM chunk, a page. A frame lands
/// 256 bytes in (`XDP_PACKET_HEADROOM`), so frames up to 3,840 bytes fit.
pub const XDP_SLOT_SIZE: usize = 4096;

/// A function told when a worker fails (its handler, or the handler's
/// constructor, panicked; or its loop ended on an error once running, such
/// as the xdp backend's interface removed): the worker's index and why,
/// called once per worker on that worker's thread as it stops. For a service that must
/// not go on with a worker short (alert, restart), beside
/// [`crate::Engine::failures`] to poll.
#[derive(Clone)]
pub struct FailureHook(pub Arc<FailureFn>);

/// The function inside a [`FailureHook`].
pub type FailureFn = dyn Fn(usize, &str) + Send + Sync;

impl fmt::Debug for FailureHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FailureHook(..)")
    }
}

/// A function run on every socket the engine opens, before it is bound:
/// for socket options udpring does not know (`SO_MARK`, `IP_TOS`, an eBPF
/// filter, ...). An error fails [`crate::Engine::start`].
#[derive(Clone)]
pub struct SocketSetup(pub Arc<SetupFn>);

/// The function inside a [`SocketSetup`]: the socket, and the address it
/// is about to be bound to.
pub type SetupFn = dyn Fn(BorrowedFd<'_>, SocketAddr) -> std::io::Result<()> + Send + Sync;

impl fmt::Debug for SocketSetup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SocketSetup(..)")
    }
}

/// One field list makes [`Config`], its defaults and [`ConfigBuilder`].
macro_rules! config {
    ($( $(#[doc = $doc:expr])+ $name:ident : $ty:ty = $default:expr; )*) => {
        /// What to run and how. Every field has a default (shown in its
        /// documentation); [`Config::builder`] sets them one by one and
        /// checks the whole.
        #[derive(Clone, Debug)]
        #[non_exhaustive]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $name: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $name: $default, )* }
            }
        }

        /// Builds a [`Config`]: `Config::builder(addr).workers(4).gro(true).build()?`.
        #[derive(Clone, Debug)]
        pub struct ConfigBuilder {
            cfg: Config,
        }

        impl ConfigBuilder {
            $(
                $(#[doc = $doc])+
                pub fn $name(mut self, value: $ty) -> Self {
                    self.cfg.$name = value;
                    self
                }
            )*

            /// The configuration, if its numbers hold together.
            pub fn build(self) -> Result<Config, ConfigError> {
                self.cfg.validate()?;
                Ok(self.cfg)
            }
        }
    };
}

config! {
    /// Address to bind every worker's socket to (port 0 picks one).
    /// Default: `127.0.0.1:0`.
    bind: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
    /// More addresses each worker also binds a socket to, after those on
    /// `bind` (its sockets `sockets_per_worker + k`): another family, a
    /// second port, or a socket of its own to send from (port 0). They do
    /// not join `multicast.joins` nor connect to `connect`. Default: none.
    also_bind: Vec<SocketAddr> = Vec::new();
    /// Number of workers (threads, each with its own sockets, buffers and
    /// handler); 0 means one per CPU this process may use. Default: 1.
    workers: usize = 1;
    /// Force a backend; `None` picks `uring` when the kernel supports it,
    /// else `mmsg`, unless `UDPRING_BACKEND` names one. Default: `None`.
    backend: Option<Backend> = None;
    /// Datagrams per `recvmmsg`/`sendmmsg` call (mmsg backend), 1..1024.
    /// Default: 32.
    batch: usize = 32;
    /// Bytes per buffer slot; 0 means [`DEFAULT_SLOT_SIZE`] (a 4096-byte
    /// payload), or [`GRO_SLOT_SIZE`] with GRO. The payload gets the slot
    /// minus [`crate::limits::HEADROOM`] bytes; a longer datagram is truncated and
    /// counted, and a longer send refused ([`crate::SendError::TooLarge`]).
    /// With GRO a slot must hold a whole train: 0 or at least
    /// [`GRO_SLOT_SIZE`] ([`Config::validate`] refuses less). Default: 0.
    slot_size: usize = 0;
    /// Receive slots per worker (rounded up to a power of two for `uring`):
    /// the datagrams the kernel can hand over before the handler returns
    /// any. 0: 1024, or 64 when the slots are 32 KiB or more (GRO's 64
    /// KiB: 4 MiB of buffers). The kernel takes a ring's slots in turn, so
    /// every slot is written once per lap: 1024 of them (64 MiB) made its
    /// copies miss the cache and the echo under a GSO flood 0.75x as fast,
    /// 256 still 0.86-0.90x of the C echo at 64 B, 64 0.91-0.96x (PERF.md).
    /// A ring that runs dry costs no datagram: they wait in the socket
    /// buffer until slots come back. Default: 0.
    recv_slots: usize = 0;
    /// Send slots per worker, for the copies `send_to` makes. A slot is
    /// taken until the kernel has the datagram; the `uring` loop submits in
    /// the middle of a batch once only an eighth are free, and `mmsg` sends
    /// after every `recvmmsg`, so they need to cover what the handler copies
    /// in one call plus a batch in flight. Default: 256.
    send_slots: usize = 256;
    /// Sends a worker may have queued at once (replies, forwards and
    /// copies); beyond it a send is refused with
    /// [`crate::SendError::Exhausted`] and counted. Default: 65536.
    max_queued_sends: usize = 65536;
    /// Datagrams (and posts) a worker's [`crate::Sender`]s may have waiting;
    /// beyond it `Sender::send_to` answers `WouldBlock`. Default: 1024.
    sender_queue: usize = 1024;
    /// Turn on `UDP_GRO`: trains arrive as one buffer. Default: off.
    gro: bool = false;
    /// Allow `UDP_SEGMENT` sends (turned off by itself if the kernel
    /// refuses). Default: on.
    gso: bool = true;
    /// Small datagrams (up to 512 bytes) queued one after another to one
    /// destination with one size go as one `UDP_SEGMENT` train, copied
    /// into one send slot (counted in `Stats::coalesced`): one send where
    /// each took one, which a reply server under a flood from one client
    /// queues every batch. The receiver gets each datagram as it was
    /// sent. Needs `gso`; off by itself when `send_zero_copy_min` is 512
    /// or less (those sends go zero-copy from their own buffers, as
    /// asked). Default: on.
    coalesce: bool = true;
    /// `SO_BINDTODEVICE`: every socket sends and receives on this
    /// interface only (needs CAP_NET_RAW unless it is already the only
    /// route). Default: none.
    bind_device: Option<String> = None;
    /// `SO_MARK`: the firewall mark of every datagram sent, for policy
    /// routing and filtering (needs CAP_NET_ADMIN). Default: none.
    mark: Option<u32> = None;
    /// The TOS byte (IPv4 `IP_TOS`) or traffic class (IPv6 `IPV6_TCLASS`)
    /// of every datagram sent: DSCP in the upper six bits, ECN in the
    /// lower two. Default: none (0).
    tos: Option<u8> = None;
    /// Read each datagram's TOS byte / traffic class on receive
    /// ([`crate::Datagram::tos`]): `IP_RECVTOS` / `IPV6_RECVTCLASS`, one
    /// more control record per datagram. Default: off.
    recv_tos: bool = false;
    /// Answers ([`crate::Transport::reply`], `reply_with`) carry the
    /// TOS byte / traffic class their datagram arrived with (DSCP and ECN
    /// reflected, per send; CE goes back as ECT(0): congestion on the way
    /// in is not claimed for the way back); needs `recv_tos`. Default: off.
    reflect_tos: bool = false;
    /// Software receive timestamps (`SO_TIMESTAMPNS`): every datagram
    /// carries the time the kernel received it
    /// ([`crate::Datagram::rx_timestamp`]), so a service can tell time
    /// spent in the socket queue from time in its handler. One more
    /// control record per datagram; nothing when off. Default: off.
    rx_timestamps: bool = false;
    /// Software TX timestamps on request: a send queued after
    /// [`crate::Transport::timestamp_next`] asks the kernel for the time it
    /// handed the datagram to the device, delivered to
    /// [`crate::Handler::on_tx_timestamp`] (`SO_TIMESTAMPING` with
    /// `SCM_TS_OPT_ID`, Linux 6.13; read from the error queue). Sends that
    /// do not ask cost nothing more. Default: off.
    tx_timestamps: bool = false;
    /// `UDP_SEGMENT` on every socket: a send longer than this many bytes
    /// is cut by the kernel into datagrams of this size (udp(7)). Trains
    /// of this segment size then go as plain sends, without a control
    /// message (`IORING_OP_SEND` instead of `SENDMSG`: no msghdr, iovec
    /// and control area for the kernel to copy and parse); trains of
    /// another size still carry their own. For a sender of one size (a
    /// load generator). Default: none.
    udp_segment: Option<u16> = None;
    /// `uring` only: sends of at least this many bytes (without control
    /// messages: a datagram, or a train the socket's `udp_segment` cuts)
    /// go as `IORING_OP_SEND_ZC` from the pool's arena, registered as a
    /// fixed buffer: the kernel sends from the slot and says when it is
    /// done with it (the slot stays held until then); `zc_sent` and
    /// `zc_copied` count what its notifications said. Loopback and
    /// delivery to a local socket always copy (PERF.md: the threshold).
    /// Default: none (plain sends).
    send_zero_copy_min: Option<usize> = None;
    /// `IPV6_V6ONLY` on IPv6 sockets: `Some(true)` IPv6 only, `Some(false)`
    /// dual-stack (IPv4 as v4-mapped addresses), `None` the system's
    /// default (`net.ipv6.bindv6only`). Refused when no socket is IPv6
    /// (`bind` and every `also_bind` IPv4). Default: none.
    only_v6: Option<bool> = None;
    /// `SO_RCVBUF` request in bytes (`SO_RCVBUFFORCE` when permitted).
    /// Default: 4 MiB.
    recv_buffer: Option<usize> = Some(4 << 20);
    /// `SO_SNDBUF` request in bytes (`SO_SNDBUFFORCE` when permitted).
    /// Default: 4 MiB.
    send_buffer: Option<usize> = Some(4 << 20);
    /// Pin worker `i` to the `(first_cpu + i)`th allowed CPU, counted
    /// round the CPUs this process may use (more workers than CPUs share
    /// them, from the first again). Default: off
    /// (inside an application, the scheduler knows better; two engines in
    /// one process would pin onto the same CPUs).
    pin: bool = false;
    /// Index (among allowed CPUs) where pinning starts. Default: 0.
    first_cpu: usize = 0;
    /// Steer datagrams to the worker of the CPU that received them
    /// (`SO_ATTACH_REUSEPORT_CBPF`). Default: off.
    steer_by_cpu: bool = false;
    /// io_uring submission queue entries, 8..32768. Default: 1024.
    sq_entries: u32 = 1024;
    /// Sockets per worker on `bind` (each a flow with its own source port
    /// when `distinct_ports` is set; otherwise more members of the
    /// reuseport group), 1..1024. Default: 1.
    sockets_per_worker: usize = 1;
    /// Bind every socket to `bind` on its own, so that with port 0 each gets
    /// a distinct port (clients, load generators), and with port P socket
    /// k gets port P + k (a range of source ports), instead of one
    /// reuseport group on one port (servers). Default: off.
    distinct_ports: bool = false;
    /// Connect every socket on `bind` to this peer after binding: only its
    /// datagrams arrive, and sends to it skip the per-datagram route
    /// lookup. Default: none.
    connect: Option<SocketAddr> = None;
    /// Never fragment (`IP_PMTUDISC_DO`, `IPV6_DONTFRAG`): a datagram larger
    /// than the path MTU is refused, and the handler gets
    /// [`crate::ErrorEvent::MessageTooLong`] with the MTU. Default: off.
    pmtu_discover: bool = false;
    /// `SO_REUSEADDR` and `SO_REUSEPORT` on every socket, so that several
    /// sockets and processes can listen on one port (multicast receivers).
    /// Default: off.
    reuse_addr: bool = false;
    /// `SO_BROADCAST`: allow sending to broadcast addresses. Default: off.
    broadcast: bool = false;
    /// Multicast settings applied to every socket at start. Default: none.
    multicast: Multicast = Multicast::default();
    /// Never sleep waiting for datagrams: spin on the socket (mmsg) or the
    /// ring (uring). Lower and steadier latency (no wake-up between CPUs)
    /// for a whole CPU per worker. Default: off.
    busy_poll: bool = false;
    /// uring: before a worker sleeps at light load, watch its ring for up
    /// to this many microseconds (0..=1000) for the next datagram: a
    /// request that comes back that soon (a closed loop) is answered
    /// without a wake-up. Adaptive and bounded: the window halves after a
    /// spin that found nothing and stops under an eighth of this, doubles
    /// after one that found work, and a worker whose CPU another task
    /// wants (preempted often, or kept waiting when it wakes) does not
    /// spin for a second; an idle worker spins once, then sleeps.
    /// It costs CPU while requests flow (up to the window per request in
    /// a closed loop); counted in `spin_hits`, `spin_misses`,
    /// `spin_yields`. Not with `busy_poll`, and the uring backend's only.
    /// Default: 0 (off).
    spin_us: u32 = 0;
    /// uring: at light load, wait for the next datagram in `recvmsg(2)`
    /// on the socket itself, and send the answers with `sendto` (the
    /// handler's first send, with nothing queued before it, in the
    /// handler's call, from the bytes it was given), rather than waiting
    /// in `io_uring_enter`: a request then
    /// costs the two system calls a blocking loop makes, and on a host
    /// whose idle CPUs halt a blocking receive's wake-up is the cheaper
    /// one (PERF.md, the kv bench). A worker parks only with one socket, the kernel's
    /// `DEFER_TASKRUN` (so the ring's own receive cannot take a datagram
    /// meanwhile), no zero-copy sends, TX timestamps, `spin_us` or
    /// `busy_poll`, and never once a [`Sender`](crate::Sender) for it
    /// exists (a post cannot wake `recvmsg`); it goes back to the ring
    /// when the socket's send buffer is full, a kernel tick and 1 ms
    /// before the latest the handler's next timer may fire (the socket's
    /// timeout counts in ticks; the ring fires the timer on time; a timer
    /// given a slack, `Transport::set_timer_slack`, that comes due while
    /// parked is fired there), or when datagrams come
    /// faster than it can wait for them (a flood: the ring's batches are
    /// cheaper). Its blocking wait lasts at most 50 ms (the socket's
    /// `SO_RCVTIMEO`, put back at the end); one that ends with nothing to
    /// do, and datagrams further apart than such a wait, make it wait in
    /// `ppoll` on the socket and the worker's eventfd instead, until a
    /// datagram, the timer's latest or a stop, with no timeout of its own.
    /// A stop reaches a parked worker at its next datagram, within those
    /// 50 ms, or at once in `ppoll`. Counted in `parked_waits`.
    /// Default: on.
    park: bool = true;
    /// Which datagrams never reach the handler (loops, reflection,
    /// strangers): see [`Guard`]. Default: [`Guard::default`], a
    /// server's: its sends carry the server mark and it refuses what other
    /// udpring servers send. An engine that sends requests to servers (a
    /// client, a load generator) takes [`Guard::client`], or a udpring
    /// server will not answer it.
    guard: Guard = Guard::default();
    /// uring: ask for `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN` (the
    /// kernel then runs completions only when the worker waits; fewer
    /// interruptions). Falls back silently when the kernel lacks them.
    /// Default: on.
    defer_taskrun: bool = true;
    /// Run on every socket before it is bound (see [`SocketSetup`]).
    /// Default: none.
    socket_setup: Option<SocketSetup> = None;
    /// Told when a worker fails (see [`FailureHook`]). Default: none.
    on_failure: Option<FailureHook> = None;
    /// xdp: the interface to attach to, when the bound address does not
    /// name one (a wildcard bind). Default: none.
    xdp_iface: Option<String> = None;
    /// xdp: where the program runs; `None` tries the driver's hook first,
    /// then the generic one (the reason is reported). Default: `None`.
    xdp_mode: Option<XdpMode> = None;
    /// xdp: bind in copy mode without trying zero-copy. Default: off.
    xdp_copy: bool = false;
}

/// A group to join at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// The group (224.0.0.0/4 or ff00::/8).
    pub group: IpAddr,
    /// For a source-specific join, the only source heard.
    pub source: Option<IpAddr>,
    /// The interface to join on.
    pub interface: Interface,
}

/// Multicast settings of a socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Multicast {
    /// Groups to join. The first socket on [`Config::bind`] joins them,
    /// and a group's datagrams all reach its worker, once: with groups,
    /// each socket on that port hears only the groups it joined itself
    /// (`IP_MULTICAST_ALL` off; by default the kernel hands every socket
    /// on the port a copy of each group the host joined), so the other
    /// workers' sockets hear none until a handler joins one
    /// ([`crate::Transport::join_group`]), and share the unicast.
    pub joins: Vec<Join>,
    /// TTL (IPv4) / hop limit (IPv6) of sent multicast.
    pub ttl: Option<u32>,
    /// Whether this host hears its own multicast.
    pub loopback: Option<bool>,
    /// The interface multicast leaves by.
    pub interface: Option<Interface>,
}

impl Config {
    /// A configuration bound to `bind`, defaults otherwise.
    pub fn new(bind: SocketAddr) -> Self {
        Config {
            bind,
            ..Config::default()
        }
    }

    /// A builder starting from the defaults, bound to `bind`.
    pub fn builder(bind: SocketAddr) -> ConfigBuilder {
        ConfigBuilder {
            cfg: Config::new(bind),
        }
    }

    /// The slot size in effect.
    pub fn effective_slot_size(&self) -> usize {
        match self.slot_size {
            // One UMEM chunk per slot: a page.
            0 if self.backend == Some(Backend::Xdp) => XDP_SLOT_SIZE,
            0 if self.gro => GRO_SLOT_SIZE,
            0 => DEFAULT_SLOT_SIZE,
            n => n,
        }
    }

    /// The receive slots per worker: `recv_slots`, or its default for the
    /// slot size (see the field).
    pub fn effective_recv_slots(&self) -> usize {
        match self.recv_slots {
            0 if self.effective_slot_size() >= 32 << 10 => 64,
            0 => 1024,
            n => n,
        }
    }
}

mod validate;
pub use validate::ConfigError;

#[cfg(test)]
mod tests;
