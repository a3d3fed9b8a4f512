//! Engine configuration.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::sys::mcast::Interface;
use std::str::FromStr;

use crate::bufring::HEADROOM;
use crate::guard::Guard;

/// How workers move datagrams (the contract every backend meets is written
/// down in the source, `src/backend/mod.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// io_uring: multishot receive on a provided-buffer ring, batched sends.
    Uring,
    /// `recvmmsg`/`sendmmsg` in batches.
    Mmsg,
    /// One `recvmsg`/`sendmsg` per datagram: the baseline.
    Simple,
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
            other => Err(format!(
                "unknown backend '{other}' (expected uring, mmsg or simple)"
            )),
        }
    }
}

/// Default slot size without GRO: a 1500-byte MTU datagram plus headroom,
/// rounded to 2 KiB.
pub const DEFAULT_SLOT_SIZE: usize = 2048;
/// Slot size with GRO: a whole 64 KiB train plus headroom.
pub const GRO_SLOT_SIZE: usize = 65536 + HEADROOM;

/// What to run and how.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to bind every worker's socket to (port 0 picks one).
    pub bind: SocketAddr,
    /// More addresses each worker also binds a socket to, after those on
    /// `bind` (its sockets `sockets_per_worker + k`): another family, a
    /// second port, or a socket of its own to send from (port 0). They do
    /// not join `multicast.joins` nor connect to `connect`.
    pub also_bind: Vec<SocketAddr>,
    /// Number of workers; 0 means one per CPU this process may use.
    pub workers: usize,
    /// Force a backend; `None` picks `uring` when the kernel supports it,
    /// else `mmsg`, unless `UDPRING_BACKEND` names one.
    pub backend: Option<Backend>,
    /// Datagrams per `recvmmsg`/`sendmmsg` call (mmsg backend).
    pub batch: usize,
    /// Bytes per buffer slot; 0 means [`DEFAULT_SLOT_SIZE`], or
    /// [`GRO_SLOT_SIZE`] with GRO. The payload gets the slot minus
    /// [`crate::HEADROOM`] bytes; a longer datagram is truncated and counted.
    pub slot_size: usize,
    /// Receive slots per worker (a power of two for `uring`).
    pub recv_slots: usize,
    /// Send slots per worker, for `send_to` copies.
    pub send_slots: usize,
    /// Turn on `UDP_GRO`: trains arrive as one buffer.
    pub gro: bool,
    /// Allow `UDP_SEGMENT` sends (turned off by itself if the kernel refuses).
    pub gso: bool,
    /// `SO_RCVBUF` request in bytes (`SO_RCVBUFFORCE` when permitted).
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF` request in bytes (`SO_SNDBUFFORCE` when permitted).
    pub send_buffer: Option<usize>,
    /// Pin worker `i` to the `(first_cpu + i)`th allowed CPU.
    pub pin: bool,
    /// Index (among allowed CPUs) where pinning starts.
    pub first_cpu: usize,
    /// Steer datagrams to the worker of the CPU that received them
    /// (`SO_ATTACH_REUSEPORT_CBPF`).
    pub steer_by_cpu: bool,
    /// io_uring submission queue entries.
    pub sq_entries: u32,
    /// Sockets per worker (each a flow with its own source port when
    /// `distinct_ports` is set; otherwise more members of the reuseport group).
    pub sockets_per_worker: usize,
    /// Bind every socket to `bind` on its own, so that with port 0 each gets
    /// a distinct port (clients, load generators), instead of one reuseport
    /// group on one port (servers).
    pub distinct_ports: bool,
    /// Connect every socket to this peer after binding: only its datagrams
    /// arrive, and sends to it skip the per-datagram route lookup.
    pub connect: Option<SocketAddr>,
    /// Never fragment (`IP_PMTUDISC_DO`, `IPV6_DONTFRAG`): a datagram larger
    /// than the path MTU is refused, and the handler gets
    /// [`crate::ErrorEvent::MessageTooLong`] with the MTU.
    pub pmtu_discover: bool,
    /// `SO_REUSEADDR` and `SO_REUSEPORT` on every socket, so that several
    /// sockets and processes can listen on one port (multicast receivers).
    pub reuse_addr: bool,
    /// `SO_BROADCAST`: allow sending to broadcast addresses.
    pub broadcast: bool,
    /// Multicast settings applied to every socket at start.
    pub multicast: Multicast,
    /// Never sleep waiting for datagrams: spin on the socket (mmsg) or the
    /// ring (uring). Lower and steadier latency (no wake-up between CPUs)
    /// for a whole CPU per worker.
    pub busy_poll: bool,
    /// Which datagrams never reach the handler (loops, reflection,
    /// strangers): see [`Guard`]. On by default.
    pub guard: Guard,
    /// uring: ask for `IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN` (the
    /// kernel then runs completions only when the worker waits; fewer
    /// interruptions). Falls back silently when the kernel lacks them.
    pub defer_taskrun: bool,
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
    /// Groups to join.
    pub joins: Vec<Join>,
    /// TTL (IPv4) / hop limit (IPv6) of sent multicast.
    pub ttl: Option<u32>,
    /// Whether this host hears its own multicast.
    pub loopback: Option<bool>,
    /// The interface multicast leaves by.
    pub interface: Option<Interface>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            also_bind: Vec::new(),
            workers: 1,
            backend: None,
            batch: 32,
            slot_size: 0,
            recv_slots: 1024,
            send_slots: 256,
            gro: false,
            gso: true,
            recv_buffer: Some(4 << 20),
            send_buffer: Some(4 << 20),
            pin: true,
            first_cpu: 0,
            steer_by_cpu: false,
            sq_entries: 1024,
            sockets_per_worker: 1,
            distinct_ports: false,
            connect: None,
            pmtu_discover: false,
            reuse_addr: false,
            broadcast: false,
            multicast: Multicast::default(),
            busy_poll: false,
            guard: Guard::default(),
            defer_taskrun: true,
        }
    }
}

impl Config {
    /// A configuration bound to `bind`, defaults otherwise.
    pub fn new(bind: SocketAddr) -> Self {
        Config {
            bind,
            ..Config::default()
        }
    }

    /// The slot size in effect.
    pub fn effective_slot_size(&self) -> usize {
        match self.slot_size {
            0 if self.gro => GRO_SLOT_SIZE,
            0 => DEFAULT_SLOT_SIZE,
            n => n,
        }
    }

    /// Checks the numbers; the message says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.workers > 1024 {
            return Err(format!("workers {} is more than 1024", self.workers));
        }
        if !(1..=1024).contains(&self.batch) {
            return Err(format!("batch must be 1..1024, not {}", self.batch));
        }
        let slot = self.effective_slot_size();
        if slot <= HEADROOM || slot > (1 << 20) {
            return Err(format!(
                "slot size must be {}..1048576 bytes, not {slot}",
                HEADROOM + 1
            ));
        }
        if self.recv_slots == 0 || self.recv_slots > 32768 {
            return Err(format!(
                "receive slots must be 1..32768, not {}",
                self.recv_slots
            ));
        }
        if self.recv_slots + self.send_slots > 65535 {
            return Err("at most 65535 slots per worker".into());
        }
        if !(1..=1024).contains(&self.sockets_per_worker) {
            return Err(format!(
                "sockets per worker must be 1..1024, not {}",
                self.sockets_per_worker
            ));
        }
        if self.also_bind.len() > 64 {
            return Err(format!(
                "also_bind has {} addresses; at most 64",
                self.also_bind.len()
            ));
        }
        self.guard.validate()?;
        if !(8..=32768).contains(&self.sq_entries) {
            return Err(format!(
                "submission queue entries must be 8..32768, not {}",
                self.sq_entries
            ));
        }
        Ok(())
    }
}
