//! What every command shares: the failure type and exit codes, the engine
//! options group, the output group, and the printers of the engine's
//! counters; the argument parsers are in `parse` (re-exported here).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::Args;
use udpring::{Backend, Config};

pub(crate) use crate::parse::*;

/// Standard output was closed by its reader (`udpring echo | head -1`).
static STDOUT_GONE: AtomicBool = AtomicBool::new(false);
/// Standard error was closed by its reader (`udpring load ... 2>&1 | head -1`).
static STDERR_GONE: AtomicBool = AtomicBool::new(false);
/// A write to standard output failed otherwise (a full disk): the output
/// is incomplete, which was said once, and the command exits 1.
static STDOUT_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether a write to standard output failed for another reason than its
/// reader going away (see [`say_fmt`]).
pub(crate) fn stdout_failed() -> bool {
    STDOUT_FAILED.load(Ordering::Relaxed)
}

/// A write to standard output failed with `e`: a reader gone ends the run
/// quietly; anything else (`ENOSPC`, `EIO`) is said once on standard
/// error and makes the exit code 1, so that `> result.json` on a full disk
/// is not a success with half a document.
pub(crate) fn stdout_error(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        gone(&STDOUT_GONE);
    } else if !STDOUT_FAILED.swap(true, Ordering::Relaxed) {
        note_fmt(
            format_args!("udpring: error: standard output: {e}: what follows is missing there"),
            true,
        );
    }
}

/// Writes `args` (and a newline) to `w`, flushed.
fn write_to(
    w: &mut dyn Write,
    args: std::fmt::Arguments<'_>,
    newline: bool,
) -> std::io::Result<()> {
    w.write_fmt(args)?;
    if newline {
        w.write_all(b"\n")?;
    }
    w.flush()
}

/// A stream's reader went away: note it, and ask the run to stop as a
/// signal would (every phase that honours SIGINT honours this), so that a
/// pipeline like `udpring load ... | head -1` ends instead of running on
/// for nobody.
fn gone(flag: &AtomicBool) {
    if !flag.swap(true, Ordering::Relaxed) {
        udpring::signals::request();
    }
}

/// Writes to standard output; once its reader has gone (a broken pipe),
/// to standard error instead, and the run ends quietly (see
/// [`run_until`]): no panic, the totals still printed where they can be.
pub(crate) fn say_fmt(args: std::fmt::Arguments<'_>, newline: bool) {
    if !STDOUT_GONE.load(Ordering::Relaxed) {
        match write_to(&mut std::io::stdout().lock(), args, newline) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => gone(&STDOUT_GONE),
            Err(e) => return stdout_error(&e),
        }
    }
    note_fmt(args, newline);
}

/// Writes to standard error (banners, live lines, notes, warnings);
/// nothing once its reader has gone, and the run ends as above. Never
/// panics, unlike `eprintln!`.
pub(crate) fn note_fmt(args: std::fmt::Arguments<'_>, newline: bool) {
    if STDERR_GONE.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = write_to(&mut std::io::stderr().lock(), args, newline)
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        gone(&STDERR_GONE);
    }
}

/// Whether standard output's or standard error's reader has gone: seen
/// by a write that failed, or now, by `poll(2)` (a pipe whose reader
/// closed reports `POLLERR` on its writing end), so a run ends when its
/// reader goes, not at its next line.
pub(crate) fn output_gone() -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    for (flag, fd) in [
        (&STDOUT_GONE, std::io::stdout().as_fd()),
        (&STDERR_GONE, std::io::stderr().as_fd()),
    ] {
        if flag.load(Ordering::Relaxed) {
            return true;
        }
        let mut p = [PollFd::new(fd, PollFlags::empty())];
        if poll(&mut p, PollTimeout::ZERO).is_ok_and(|n| n > 0)
            && p[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLERR))
        {
            gone(flag);
            return true;
        }
    }
    false
}

/// Whether the run should stop: a signal, or its output went away.
pub(crate) fn stop_requested() -> bool {
    udpring::signals::requested() || output_gone()
}

/// Sleeps `d`, or less if a stop comes (see [`stop_requested`]).
pub(crate) fn sleep_unless_stopped(d: std::time::Duration) {
    wait_until(Some(std::time::Instant::now() + d));
}

/// Sleeps until `deadline` (`None`: no deadline) or a stop: a signal, or
/// standard output's or error's reader gone. One `poll(2)` on the stop
/// pipe and on both outputs, so an idle command wakes for nothing else.
/// Returns whether to stop.
pub(crate) fn wait_until(deadline: Option<std::time::Instant>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    // An output that reports anything but POLLERR (a socket's POLLHUP, a
    // closed descriptor's POLLNVAL) is left to its writes' errors, or the
    // poll would return at once, again and again.
    let mut watch = [true, true];
    loop {
        if stop_requested() {
            return true;
        }
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return false;
        }
        let Some(stop) = udpring::signals::fd() else {
            let step = std::time::Duration::from_millis(50);
            std::thread::sleep(left.map_or(step, |l| l.min(step)));
            continue;
        };
        let mut fds = vec![PollFd::new(stop, PollFlags::POLLIN)];
        let outs = [stdout.as_fd(), stderr.as_fd()];
        let watched: Vec<usize> = (0..2).filter(|&i| watch[i]).collect();
        fds.extend(
            watched
                .iter()
                .map(|&i| PollFd::new(outs[i], PollFlags::empty())),
        );
        // Rounded up: a wait never ends early and spins.
        let timeout = left.map_or(PollTimeout::NONE, |l| {
            let ms = l.as_micros().div_ceil(1000);
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        });
        if poll(&mut fds, timeout).is_ok_and(|n| n > 0) {
            for (k, &i) in watched.iter().enumerate() {
                let r = fds[k + 1].revents().unwrap_or(PollFlags::empty());
                if !r.is_empty() && !r.intersects(PollFlags::POLLERR) {
                    watch[i] = false;
                }
            }
        }
    }
}

/// `println!` that survives a closed pipe (see [`say_fmt`]).
macro_rules! say {
    ($($t:tt)*) => { $crate::common::say_fmt(format_args!($($t)*), true) };
}

/// `print!` that survives a closed pipe (see [`say_fmt`]).
macro_rules! say_raw {
    ($($t:tt)*) => { $crate::common::say_fmt(format_args!($($t)*), false) };
}

/// `eprintln!` that survives a closed pipe (see [`note_fmt`]).
macro_rules! note {
    ($($t:tt)*) => { $crate::common::note_fmt(format_args!($($t)*), true) };
}

/// `eprint!` that survives a closed pipe (see [`note_fmt`]).
macro_rules! note_raw {
    ($($t:tt)*) => { $crate::common::note_fmt(format_args!($($t)*), false) };
}

/// The version of the JSON documents' shape (tools/udpring/json-vocabulary.json):
/// raised when a name changes meaning or type, or goes away. 2: one name
/// per quantity (`load`'s counts at the top level, `addr` for every peer,
/// `ping`'s `foreign`/`invalid`/`unmatched`, integer counts in `report
/// --diff`).
pub(crate) const SCHEMA: u64 = 2;

/// Prints `body` as the one JSON document of a run, with the names every
/// document shares (tools/udpring/json-vocabulary.json): `schema`, `command`, and
/// `duration_s` when the run has a length.
pub(crate) fn say_json(command: &str, duration_s: Option<f64>, body: impl serde::Serialize) {
    let mut v = serde_json::to_value(body).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.insert("schema".into(), SCHEMA.into());
        m.insert("command".into(), command.into());
        if let Some(d) = duration_s {
            m.insert("duration_s".into(), d.into());
        }
    }
    say!("{v}");
}

/// A failure: usage errors exit 2, runtime errors 1.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) msg: String,
}

pub(crate) fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        msg: msg.into(),
    }
}

pub(crate) fn runtime(e: std::io::Error) -> Failure {
    if e.kind() == std::io::ErrorKind::InvalidInput {
        return usage(flag_named(e.to_string()));
    }
    Failure {
        code: 1,
        msg: e.to_string(),
    }
}

/// A `Config` the engine refuses: a usage error naming the flag.
pub(crate) fn config_error(e: udpring::ConfigError) -> Failure {
    usage(flag_named(e.to_string()))
}

/// The engine names its `Config` fields in its errors (`slot_size must be
/// 217..1048576, not 1`); the command names the flag that set them.
fn flag_named(msg: String) -> String {
    const FLAGS: [(&str, &str); 6] = [
        ("only_v6", "--v6only/--dual-stack"),
        ("slot_size", "--slot-size"),
        ("recv_slots", "--recv-slots"),
        ("batch", "--batch"),
        ("workers", "--workers"),
        ("backend", "--backend"),
    ];
    for (field, flag) in FLAGS {
        if let Some(rest) = msg.strip_prefix(field)
            && (rest.starts_with(' ') || rest.starts_with(':'))
        {
            return format!("{flag}{rest}");
        }
    }
    msg
}

/// [`resolve_target`], its refusals usage errors.
pub(crate) fn resolve(target: &str) -> Result<SocketAddr, Failure> {
    resolve_target(target).map_err(usage)
}

/// Socket controls every command that opens sockets takes.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct SocketArgs {
    /// Send and receive on this interface only (SO_BINDTODEVICE; needs
    /// CAP_NET_RAW).
    #[arg(long, value_name = "IFACE", value_parser = parse_iface)]
    pub(crate) bind_device: Option<String>,
    /// Firewall mark of every datagram sent (SO_MARK; needs CAP_NET_ADMIN),
    /// for policy routing and filtering.
    #[arg(long, value_name = "N")]
    pub(crate) mark: Option<u32>,
    /// DSCP of every datagram sent, 0..63 (46: EF, expedited forwarding;
    /// 34: AF41), in the IPv4 TOS byte or the IPv6 traffic class.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(0..=63))]
    pub(crate) dscp: Option<u8>,
    /// ECN codepoint of every datagram sent: ect0, ect1 or ce (not-ect is
    /// the default).
    #[arg(long, value_name = "CODEPOINT", value_parser = ["not-ect", "ect0", "ect1", "ce"])]
    pub(crate) ecn: Option<String>,
    /// IPv6 sockets take IPv6 only (IPV6_V6ONLY on).
    #[arg(long, conflicts_with = "dual_stack")]
    pub(crate) v6only: bool,
    /// IPv6 sockets also take IPv4, as v4-mapped addresses (IPV6_V6ONLY
    /// off). Neither flag: the system's default (net.ipv6.bindv6only).
    #[arg(long)]
    pub(crate) dual_stack: bool,
}

impl SocketArgs {
    /// `IPV6_V6ONLY` as asked: on, off, or the system's.
    pub(crate) fn only_v6(&self) -> Option<bool> {
        match (self.v6only, self.dual_stack) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }

    /// The TOS byte / traffic class asked for: DSCP << 2 | ECN.
    pub(crate) fn tos(&self) -> Option<u8> {
        let ecn = match self.ecn.as_deref() {
            Some("ect1") => 1,
            Some("ect0") => 2,
            Some("ce") => 3,
            _ => 0,
        };
        (self.dscp.is_some() || ecn != 0).then(|| (self.dscp.unwrap_or(0) << 2) | ecn)
    }

    /// Sets these controls on `c`.
    pub(crate) fn apply(&self, c: &mut Config) {
        c.tos = self.tos();
        c.bind_device = self.bind_device.clone();
        c.mark = self.mark;
        c.only_v6 = self.only_v6();
    }
}

/// A usage error for `--iface` given to a server that joins no group
/// unless the backend is xdp, whose interface it names (a socket backend
/// receives on every interface of `--bind`).
pub(crate) fn xdp_iface_only(iface: Option<&str>, backend: Option<Backend>) -> Result<(), Failure> {
    match iface {
        Some(i) if backend != Some(Backend::Xdp) => Err(usage(format!(
            "--iface {i} is the interface the xdp backend attaches to: add --backend xdp (a \
             socket backend receives on every interface of --bind)"
        ))),
        _ => Ok(()),
    }
}

/// Options shared by commands that run an engine.
#[derive(Args, Clone)]
pub(crate) struct EngineArgs {
    #[command(flatten)]
    pub(crate) socket: SocketArgs,
    /// Worker threads, each with its own SO_REUSEPORT socket (0: one per
    /// CPU; at most the CPUs this process may use).
    #[arg(long, short = 'w', default_value_t = 0, value_parser = parse_workers)]
    pub(crate) workers: usize,
    /// Backend: uring (io_uring), mmsg (recvmmsg/sendmmsg), simple (one
    /// syscall per datagram) or xdp (AF_XDP: frames skip the kernel's UDP
    /// stack; root, a real interface, one worker per receive queue).
    /// Default: uring if the kernel has it, else mmsg.
    #[arg(long, value_parser = parse_backend)]
    pub(crate) backend: Option<Backend>,
    /// The interface (name): the xdp backend attaches to it when the bound
    /// address is a wildcard (otherwise to the interface that has the
    /// address); fanout joins its groups and sends multicast on it.
    #[arg(long, value_name = "NAME", value_parser = parse_iface)]
    pub(crate) iface: Option<String>,
    /// Datagrams per recvmmsg/sendmmsg call, 1..1024 (default 32), with
    /// --backend mmsg (the others make no such call).
    #[arg(long, value_parser = parse_batch)]
    pub(crate) batch: Option<usize>,
    /// Turn on UDP_GRO: a train of segments arrives as one buffer and is
    /// echoed as one GSO send with the same segment size.
    #[arg(long)]
    pub(crate) gro: bool,
    /// Send each small datagram on its own: without it, replies of up to
    /// 512 bytes queued one after another to one destination go as one
    /// GSO train (the receiver still gets each as sent; counted in
    /// `coalesced`).
    #[arg(long)]
    pub(crate) no_coalesce: bool,
    /// Bytes per buffer slot (0: 2048, or 64 KiB + headroom with --gro).
    /// Larger datagrams are truncated and counted.
    #[arg(long, default_value_t = 0)]
    pub(crate) slot_size: usize,
    /// Receive buffer slots per worker (rounded up to a power of two for
    /// uring; 0: 1024, or 64 with --gro's 64 KiB slots).
    #[arg(long, default_value_t = 0)]
    pub(crate) recv_slots: usize,
    /// Socket receive/send buffer request in bytes (FORCE variant when root).
    #[arg(long, default_value_t = 4 << 20)]
    pub(crate) socket_buffer: usize,
    /// The send buffer alone, in bytes (default: --socket-buffer).
    #[arg(long)]
    pub(crate) send_buffer: Option<usize>,
    /// Do not pin workers to CPUs.
    #[arg(long, conflicts_with = "cpu")]
    pub(crate) no_pin: bool,
    /// Pin workers from this CPU index up (among the CPUs this process may use).
    #[arg(long, default_value_t = 0, value_parser = parse_cpu)]
    pub(crate) cpu: usize,
    /// Steer each datagram to the worker of the CPU that received it
    /// (SO_ATTACH_REUSEPORT_CBPF).
    #[arg(long)]
    pub(crate) steer_cpu: bool,
    /// Never sleep waiting for datagrams (spin): lower, steadier latency
    /// for a whole CPU per worker.
    #[arg(long)]
    pub(crate) busy_poll: bool,
    /// Before sleeping, watch for the next datagram for up to MICROS µs
    /// (0-1000, 0: never; uring): a request that comes back that soon, as
    /// in a closed loop, is answered without a wake-up. Adaptive: spins
    /// that find nothing shrink the window until it stops, and a worker
    /// whose CPU is shared stops spinning; idle, it sleeps as without.
    /// Costs CPU while requests flow (counted: spin_hits, spin_misses,
    /// spin_yields). Default: 50 for echo on the uring backend, else 0
    #[arg(long, value_name = "MICROS", conflicts_with = "busy_poll",
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub(crate) spin: Option<u32>,
    /// Never park (uring): by default, at light load and without --spin, a
    /// worker with one socket waits for the next datagram in recvmsg(2)
    /// itself rather than in io_uring_enter, and answers with sendmsg: two
    /// system calls a request, as a blocking loop makes, and a cheaper
    /// wake-up where idle CPUs halt (counted: parked_waits)
    #[arg(long)]
    pub(crate) no_park: bool,
}

impl EngineArgs {
    /// The engine configuration these flags ask for, bound to `bind`; a
    /// usage error for a flag the chosen backend would not use.
    pub(crate) fn config(&self, bind: SocketAddr) -> Result<Config, Failure> {
        if let Some(b) = self.batch
            && self.backend != Some(Backend::Mmsg)
        {
            return Err(usage(format!(
                "--batch {b} sets the datagrams per recvmmsg/sendmmsg call of --backend mmsg; \
                 {} makes no such call",
                self.backend.map_or(
                    "the default backend (uring where the kernel has it)".into(),
                    |b| { format!("--backend {b}") }
                )
            )));
        }
        if let (Some(1..), Some(b @ (Backend::Mmsg | Backend::Simple | Backend::Xdp))) =
            (self.spin, self.backend)
        {
            return Err(usage(format!(
                "--spin watches an io_uring (the uring backend); --backend {b} has \
                 --busy-poll"
            )));
        }
        if self.no_coalesce && self.backend == Some(Backend::Xdp) {
            return Err(usage(
                "--no-coalesce: --backend xdp sends one frame per datagram and never \
                 coalesces"
                    .to_string(),
            ));
        }
        let mut c = Config::new(bind);
        self.socket.apply(&mut c);
        c.workers = self.workers;
        c.backend = self.backend;
        if let Some(b) = self.batch {
            c.batch = b;
        }
        c.gro = self.gro;
        c.coalesce = !self.no_coalesce;
        c.slot_size = self.slot_size;
        c.recv_slots = self.recv_slots;
        c.recv_buffer = Some(self.socket_buffer);
        c.send_buffer = Some(self.send_buffer.unwrap_or(self.socket_buffer));
        c.pin = !self.no_pin;
        c.first_cpu = self.cpu;
        c.steer_by_cpu = self.steer_cpu;
        c.busy_poll = self.busy_poll;
        c.spin_us = self.spin.unwrap_or(0);
        c.park = !self.no_park;
        c.xdp_iface = self.iface.clone();
        Ok(c)
    }

    /// Gives `c` a spin of `us` µs before sleeping unless `--spin` or
    /// `--busy-poll` was given or the backend will not be uring (chosen
    /// as the engine will choose it: `--backend`, `UDPRING_BACKEND`, the
    /// kernel's io_uring).
    pub(crate) fn spin_by_default(&self, c: &mut Config, us: u32) {
        if self.spin.is_none()
            && !self.busy_poll
            && matches!(
                udpring::choose_backend(self.backend),
                Ok((Backend::Uring, _))
            )
        {
            c.spin_us = us;
        }
    }
}

/// Who may talk to a server, and how fast (echo, fanout, mcast pong).
#[derive(Args, Clone)]
pub(crate) struct GuardArgs {
    /// Only answer sources inside these prefixes, e.g. 10.0.0.0/8,
    /// 2001:db8::/32 or one address (comma-separated or repeated; default:
    /// any source).
    #[arg(long = "allow", value_name = "CIDR", value_delimiter = ',')]
    pub(crate) allow: Vec<udpring::Cidr>,
    /// Answer datagrams from this source port although it belongs to a
    /// service that answers everything (echo 7, DNS 53, NTP 123, ...:
    /// refused by default, so this server cannot be one half of a packet
    /// loop); comma-separated or repeated.
    #[arg(long = "allow-port", value_name = "PORT", value_delimiter = ',')]
    pub(crate) allow_port: Vec<u16>,
    /// At most R datagrams per second from each source address, with a
    /// burst of R (or R:BURST); sources beyond the table's 4096 are
    /// tracked by evicting the oldest (counted).
    #[arg(long, value_name = "R[:BURST]", value_parser = parse_source_rate)]
    pub(crate) per_source_rate: Option<udpring::RateLimit>,
    /// Take datagrams that other udpring servers sent (they carry the
    /// server mark: TTL 160..200), refused by default so that no two
    /// udpring servers can answer each other for ever; e.g. a relay placed
    /// below another relay. Two servers that both take them and send to
    /// each other make a loop.
    #[arg(long)]
    pub(crate) accept_marked: bool,
    /// Turn the loop and reflection guards off: forged datagrams (from
    /// this server itself, from broadcast addresses, from echo or DNS
    /// ports, from other udpring servers) are then answered too, and this
    /// server's sends go without the server mark. Every check is off, so
    /// it takes none of the guard's other flags (--allow and
    /// --per-source-rate would not be enforced).
    #[arg(long, conflicts_with_all = ["allow", "allow_port", "per_source_rate", "accept_marked"])]
    pub(crate) no_guard: bool,
}

impl GuardArgs {
    /// The engine's guard these flags ask for.
    pub(crate) fn guard(&self) -> udpring::Guard {
        let mut g = if self.no_guard {
            udpring::Guard::off()
        } else {
            udpring::Guard::default()
        };
        g.deny_ports.retain(|p| !self.allow_port.contains(p));
        g.allow = self.allow.clone();
        g.per_source_rate = self.per_source_rate;
        g.refuse_marked &= !self.accept_marked;
        g
    }
}

fn parse_source_rate(s: &str) -> Result<udpring::RateLimit, String> {
    let (r, b) = match s.split_once(':') {
        Some((r, b)) => (r, Some(b)),
        None => (s, None),
    };
    let per_second: f64 = r
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.001 && *v <= 1e9)
        .ok_or_else(|| {
            format!("--per-source-rate {s}: the rate must be 0.001..1000000000 per second")
        })?;
    let burst = match b {
        Some(b) => b
            .parse::<u32>()
            .ok()
            .filter(|&b| b >= 1)
            .ok_or_else(|| format!("--per-source-rate {s}: the burst must be 1..4294967295"))?,
        None => per_second.ceil().clamp(1.0, u32::MAX as f64) as u32,
    };
    Ok(udpring::RateLimit { per_second, burst })
}

/// A thread of `s` named `name`, or why not (`Scope::spawn` panics).
pub(crate) fn spawn_scoped<'scope, 'env, T: Send + 'scope>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> std::io::Result<std::thread::ScopedJoinHandle<'scope, T>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn_scoped(s, f)
        .map_err(udpring::os::explain_thread_limit)
}
