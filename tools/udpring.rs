//! `udpring`: the command-line tool. Run `udpring --help`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use udpring::apps::bench::{self, BenchOpts};
use udpring::apps::echo::Echo;
use udpring::{Backend, Config, Engine, Stats};

/// Zero-copy, high-throughput UDP engine for Linux (io_uring, recvmmsg, GSO/GRO).
#[derive(Parser)]
#[command(name = "udpring", version, propagate_version = true)]
#[command(after_help = "Examples:\n  \
    udpring bench                      # echo engine + flood on loopback, all backends\n  \
    udpring echo --bind 0.0.0.0:9000   # an echo server, one worker per CPU\n  \
    udpring echo --sockperf            # ... that sockperf's ping-pong client accepts\n\n\
    Environment: UDPRING_BACKEND=uring|mmsg|simple forces a backend.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo every datagram back to its sender, from the receive buffer itself.
    Echo(EchoArgs),
    /// Measure echo throughput on loopback: an echo engine and a flood
    /// client in this process, for each backend and size; prints a table.
    Bench(BenchArgs),
    /// Send load to an echo server and account for every reply: rates,
    /// loss, reordering, duplicates, RTT percentiles.
    Load(LoadArgs),
    /// Merge JSON results of `load --json` (from many processes or hosts)
    /// into one: counts and rates add up, histograms merge exactly.
    Report(ReportArgs),
    /// Find the path MTU to a host: by ICMP (like tracepath) and, where ICMP
    /// is filtered, by probes an echo server returns (RFC 8899 style).
    Pmtu(PmtuArgs),
    /// Request/response against an echo server: request IDs, retransmission
    /// with exponential backoff, "server looks down" after the last attempt.
    Ping(PingArgs),
    /// Relay every datagram to several destinations (unicast or groups) from
    /// the receive buffer itself: application-level multicast, or bridging a
    /// group to other groups and hosts.
    Fanout(FanoutArgs),
    /// Multicast: listen (with sequence checks), send, and ping-pong a group.
    #[command(subcommand)]
    Mcast(McastCmd),
}

#[derive(Subcommand)]
enum McastCmd {
    /// Join GROUP:PORT and count what arrives per source; --verify checks
    /// sequences (loss, duplicates, reordering) of `mcast send` traffic.
    Listen(McastArgs),
    /// Send sequenced datagrams to GROUP:PORT at a rate.
    Send(McastArgs),
    /// Join GROUP:PORT and answer every ping by unicast to its sender.
    Pong(McastArgs),
    /// Ping GROUP:PORT and report every responder: replies, loss, RTT.
    Ping(McastArgs),
}

#[derive(Args)]
struct McastArgs {
    /// GROUP:PORT, e.g. 239.1.2.3:5000 or [ff15::1]:5000 (scope: [ff12::1%eth0]).
    group: String,
    /// Only this source (source-specific join; listen and pong).
    #[arg(long)]
    source: Option<std::net::IpAddr>,
    /// Interface name for the join and for sending.
    #[arg(long)]
    iface: Option<String>,
    /// TTL / hop limit of what is sent.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: u32,
    /// Do not hear our own multicast on this host.
    #[arg(long)]
    no_loop: bool,
    /// Datagrams per second (send, ping).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Datagrams to send (send, ping; send default: until stopped).
    #[arg(long, short = 'c')]
    count: Option<u64>,
    /// Payload size (32..65507).
    #[arg(long, short = 's', default_value_t = 64)]
    size: usize,
    /// Check sequence numbers (listen).
    #[arg(long)]
    verify: bool,
    /// Stop after this many seconds (listen, pong, send).
    #[arg(long, value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Parses GROUP:PORT (an optional %IFACE scope on IPv6 names the interface).
fn parse_group(s: &str) -> Result<SocketAddr, Failure> {
    let (text, scope) = match (s.find('%'), s.rfind(']')) {
        (Some(p), Some(q)) if p < q => (format!("{}{}", &s[..p], &s[q..]), Some(&s[p + 1..q])),
        _ => (s.to_string(), None),
    };
    let mut a: SocketAddr = text.parse().map_err(|_| {
        usage(format!(
            "'{s}' is not GROUP:PORT (e.g. 239.1.2.3:5000 or [ff15::1]:5000)"
        ))
    })?;
    if !a.ip().is_multicast() {
        return Err(usage(format!(
            "{} is not a multicast group (224.0.0.0/4 or ff00::/8)",
            a.ip()
        )));
    }
    if a.port() == 0 {
        return Err(usage(format!("{s}: give a port")));
    }
    if let (Some(sc), SocketAddr::V6(v6)) = (scope, &mut a) {
        let idx = match sc.parse::<u32>() {
            Ok(i) => i,
            Err(_) => udpring::interface_index(sc).map_err(|e| usage(e.to_string()))?,
        };
        v6.set_scope_id(idx);
    }
    Ok(a)
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    udpring fanout --listen 0.0.0.0:5000 --to 10.0.0.2:5000,10.0.0.3:5000\n  \
    udpring fanout --listen 0.0.0.0:5000 --join 239.1.1.1 --to 10.0.0.9:6000   # group -> host\n  \
    udpring fanout --listen 0.0.0.0:5000 --join 232.1.1.1@10.0.0.1 --to 239.2.2.2:5000 --ttl 4")]
struct FanoutArgs {
    /// Address to receive on.
    #[arg(long, value_parser = parse_addr)]
    listen: SocketAddr,
    /// Destinations, comma-separated ADDR:PORT (unicast or multicast).
    #[arg(long, required = true, value_delimiter = ',', value_parser = parse_addr)]
    to: Vec<SocketAddr>,
    /// Join GROUP (or GROUP@SOURCE, source-specific) before receiving; repeatable.
    #[arg(long, value_parser = parse_join)]
    join: Vec<(std::net::IpAddr, Option<std::net::IpAddr>)>,
    /// Interface (name) for joins and for multicast sent.
    #[arg(long)]
    iface: Option<String>,
    /// TTL / hop limit of multicast sent.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: Option<u32>,
    /// Stop after this many seconds.
    #[arg(long, value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// No per-second lines.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the final counters as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_join(s: &str) -> Result<(std::net::IpAddr, Option<std::net::IpAddr>), String> {
    let (g, src) = match s.split_once('@') {
        Some((g, src)) => (g, Some(src)),
        None => (s, None),
    };
    let g: std::net::IpAddr = g
        .parse()
        .map_err(|_| format!("'{g}' is not a group address"))?;
    if !g.is_multicast() {
        return Err(format!(
            "{g} is not a multicast group (224.0.0.0/4 or ff00::/8)"
        ));
    }
    let src = match src {
        Some(x) => {
            let a: std::net::IpAddr = x
                .parse()
                .map_err(|_| format!("'{x}' is not a source address"))?;
            if a.is_ipv6() != g.is_ipv6() || a.is_multicast() {
                return Err(format!("source {a} does not go with group {g}"));
            }
            Some(a)
        }
        None => None,
    };
    Ok((g, src))
}

#[derive(Args)]
#[command(
    after_help = "Each request carries a random ID; only a reply with that ID from the\n\
    server's address counts (others are counted as wrong-id / wrong-address).\n\
    An unanswered request is sent again after --timeout, then --timeout x --backoff,\n\
    ... up to --max-timeout, --attempts sends in all. Exit code 1 if the server\n\
    looked down for any request."
)]
struct PingArgs {
    /// HOST:PORT of an echo server.
    target: String,
    /// Requests to make.
    #[arg(long, short = 'c', default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Seconds between requests.
    #[arg(long, short = 'i', default_value = "0.2", value_parser = parse_secs_or_zero)]
    interval: Duration,
    /// Seconds to wait after the first send of a request.
    #[arg(long, default_value = "0.1", value_parser = parse_secs)]
    timeout: Duration,
    /// Each retransmission waits this many times longer (>= 1).
    #[arg(long, default_value_t = 2.0)]
    backoff: f64,
    /// Longest wait between sends, seconds.
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    max_timeout: Duration,
    /// Sends per request before the server looks down.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    attempts: u32,
    /// Request size in bytes (32..65507).
    #[arg(long, short = 's', default_value_t = 64)]
    size: usize,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(after_help = "Methods:\n  \
    icmp     probes with don't-fragment; routers' 'fragmentation needed' / 'packet too big'\n           \
    give the MTU; the target's echo or 'port unreachable' confirms. Says it cannot tell\n           \
    when the path drops ICMP (a black hole) instead of guessing.\n  \
    plpmtud  binary search between 1280 (IPv6) or --floor (IPv4) and the link MTU; a size\n           \
    passes when an echo server at the target returns it. Needs an echo; not ICMP.\n  \
    auto     icmp, then plpmtud if icmp cannot tell.\n\n\
    Sizes are IP packet sizes, as tracepath prints them.")]
struct PmtuArgs {
    /// HOST[:PORT] (port default 7, echo; IPv6 as [ADDR]:PORT).
    target: String,
    /// auto, icmp or plpmtud.
    #[arg(long, default_value = "auto", value_parser = ["auto", "icmp", "plpmtud"])]
    method: String,
    /// Seconds to wait for one probe's answer.
    #[arg(long, default_value = "0.3", value_parser = parse_secs)]
    timeout: Duration,
    /// Tries per size.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    tries: u32,
    /// IPv4 floor for plpmtud (known to pass; IPv6 uses 1280).
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(68..=65535))]
    floor: u32,
    /// Print {pmtu, method, probes, elapsed_ms} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    udpring load 127.0.0.1:9000                        # flood 64 B for 5 s\n  \
    udpring load 127.0.0.1:9000 --mode ping --flows 4  # closed-loop RTT, 4 flows\n  \
    udpring load [::1]:9000 --rate 100000 --size 512   # paced, latency from intended send time\n  \
    udpring load host:11111 --sockperf --mode ping     # against `sockperf server`\n  \
    udpring load 127.0.0.1:9000 --gso 64 --json > a.json")]
struct LoadArgs {
    /// The echo server: HOST:PORT (names are resolved; IPv6 as [ADDR]:PORT).
    target: String,
    /// flood: as fast as possible; ping: one request in flight per flow.
    /// With --rate the mode is an open loop at that rate.
    #[arg(long, default_value = "flood", value_parser = ["flood", "ping"])]
    mode: String,
    /// Open loop at this many datagrams per second (all workers together).
    #[arg(long, value_parser = parse_rate)]
    rate: Option<f64>,
    /// Payload bytes per datagram (32..65507; 46.. with --sockperf).
    #[arg(long, short = 's', default_value_t = 64)]
    size: usize,
    /// Flows: sockets with distinct source ports, spread over the workers.
    #[arg(long, default_value_t = 1)]
    flows: usize,
    /// Worker threads (each pinned to a CPU).
    #[arg(long, short = 'w', default_value_t = 1)]
    workers: usize,
    /// Seconds to send, after the warm-up.
    #[arg(long, short = 't', value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// Datagrams to send, after the warm-up (instead of --duration).
    #[arg(long, short = 'n', conflicts_with = "duration")]
    count: Option<u64>,
    /// Seconds of traffic before measuring starts.
    #[arg(long, default_value = "0.2", value_parser = parse_secs_or_zero)]
    warmup: Duration,
    /// Datagrams per send as one GSO train (1: no GSO). Replies are received
    /// with GRO.
    #[arg(long, default_value_t = 1)]
    gso: usize,
    /// Flood: at most this many datagrams in flight per worker.
    #[arg(long)]
    window: Option<u64>,
    /// Seconds to wait for late replies after the last send.
    #[arg(long, default_value = "0.5", value_parser = parse_secs_or_zero)]
    drain: Duration,
    /// Ping mode: seconds before a request counts as unanswered.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    timeout: Duration,
    /// Backend: uring, mmsg or simple.
    #[arg(long, value_parser = parse_backend)]
    backend: Option<Backend>,
    /// Local address to send from (port 0: a port per flow).
    #[arg(long, value_parser = parse_addr)]
    bind: Option<SocketAddr>,
    /// Prefix sockperf's header so `sockperf server` can be the target.
    #[arg(long)]
    sockperf: bool,
    /// Do not connect the flows' sockets to the target: slower sends, but
    /// datagrams from other addresses reach udpring and count as foreign
    /// (connected, the kernel drops them).
    #[arg(long)]
    unconnected: bool,
    /// Print the result as JSON (histogram included; `udpring report` merges).
    #[arg(long)]
    json: bool,
    /// Write the RTT percentile distribution (HdrHistogram .hgrm text, µs).
    #[arg(long)]
    hist_out: Option<std::path::PathBuf>,
    /// No per-second lines.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Pin workers from this CPU index up (default: the last CPUs, leaving
    /// the first ones to a server on the same host).
    #[arg(long)]
    cpu: Option<usize>,
    /// Never sleep waiting for replies (spin): lower, steadier latency for
    /// a whole CPU per worker.
    #[arg(long)]
    busy_poll: bool,
    /// TTL / hop limit when the target is a multicast group (each
    /// responder, e.g. `udpring mcast pong`, is then reported on its own).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=255))]
    ttl: u32,
}

#[derive(Args)]
struct ReportArgs {
    /// Result files from `udpring load --json`.
    #[arg(required = true)]
    files: Vec<std::path::PathBuf>,
    /// Print the merged result as JSON.
    #[arg(long)]
    json: bool,
    /// Write the merged RTT percentile distribution (.hgrm text, µs).
    #[arg(long)]
    hist_out: Option<std::path::PathBuf>,
}

/// Options shared by commands that run an engine.
#[derive(Args, Clone)]
struct EngineArgs {
    /// Worker threads, each with its own SO_REUSEPORT socket (0: one per CPU).
    #[arg(long, short = 'w', default_value_t = 0)]
    workers: usize,
    /// Backend: uring (io_uring), mmsg (recvmmsg/sendmmsg) or simple (one
    /// syscall per datagram). Default: uring if the kernel has it, else mmsg.
    #[arg(long, value_parser = parse_backend)]
    backend: Option<Backend>,
    /// Datagrams per recvmmsg/sendmmsg call (mmsg backend), 1..1024.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Turn on UDP_GRO: a train of segments arrives as one buffer and is
    /// echoed as one GSO send with the same segment size.
    #[arg(long)]
    gro: bool,
    /// Bytes per buffer slot (0: 2048, or 64 KiB + headroom with --gro).
    /// Larger datagrams are truncated and counted.
    #[arg(long, default_value_t = 0)]
    slot_size: usize,
    /// Receive buffer slots per worker (rounded up to a power of two for uring).
    #[arg(long, default_value_t = 1024)]
    recv_slots: usize,
    /// Socket receive/send buffer request in bytes (FORCE variant when root).
    #[arg(long, default_value_t = 4 << 20)]
    socket_buffer: usize,
    /// Do not pin workers to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// Pin workers from this CPU index up (among the CPUs this process may use).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Steer each datagram to the worker of the CPU that received it
    /// (SO_ATTACH_REUSEPORT_CBPF).
    #[arg(long)]
    steer_cpu: bool,
    /// Never sleep waiting for datagrams (spin): lower, steadier latency
    /// for a whole CPU per worker.
    #[arg(long)]
    busy_poll: bool,
}

impl EngineArgs {
    fn config(&self, bind: SocketAddr) -> Config {
        let mut c = Config::new(bind);
        c.workers = self.workers;
        c.backend = self.backend;
        c.batch = self.batch;
        c.gro = self.gro;
        c.slot_size = self.slot_size;
        c.recv_slots = self.recv_slots;
        c.recv_buffer = Some(self.socket_buffer);
        c.send_buffer = Some(self.socket_buffer);
        c.pin = !self.no_pin;
        c.first_cpu = self.cpu;
        c.steer_by_cpu = self.steer_cpu;
        c.busy_poll = self.busy_poll;
        c
    }
}

#[derive(Args)]
struct EchoArgs {
    /// Address to listen on: IPv4 `ADDR:PORT` or IPv6 `[ADDR]:PORT`.
    #[arg(long, short = 'b', default_value = "0.0.0.0:9000", value_parser = parse_addr)]
    bind: SocketAddr,
    /// Clear sockperf's client flag so `sockperf ping-pong` accepts the echoes.
    #[arg(long)]
    sockperf: bool,
    /// Reply to nothing: count and drop, a sink (like iperf3's server) for
    /// measuring senders.
    #[arg(long, conflicts_with = "sockperf")]
    discard: bool,
    /// Stop after this many seconds (default: run until SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Option<Duration>,
    /// No per-second counter lines.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the final totals as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
#[command(
    after_help = "Rows: flood (a window of datagrams in flight: echo throughput) at 64 and\n\
    1400 B per backend, ping (one in flight: round-trip time) per backend, and\n\
    floods with GSO/GRO (trains of up to 64 datagrams per send) on uring.\n\
    'vs simple' compares with the simple backend (one syscall per datagram):\n\
    echoed/s for floods, median RTT for ping; above 1 is better."
)]
struct BenchArgs {
    /// Seconds measured per row.
    #[arg(long, default_value = "2", value_parser = parse_secs, allow_negative_numbers = true)]
    duration: Duration,
    /// Warm-up per row, not measured.
    #[arg(long, default_value = "0.3", value_parser = parse_secs_or_zero)]
    warmup: Duration,
    /// Run every workload on every backend (GSO/GRO rows included).
    #[arg(long)]
    compare: bool,
    /// Only these server backends (comma-separated); default: all.
    #[arg(long, value_delimiter = ',', value_parser = parse_backend)]
    backend: Vec<Backend>,
    /// Only these payload sizes in bytes (comma-separated; 32..65507);
    /// replaces 64 and 1400 in the flood rows.
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    size: Vec<usize>,
    /// Only floods, or only ping.
    #[arg(long, value_parser = ["flood", "ping"])]
    only: Option<String>,
    /// Datagrams kept in flight in flood rows.
    #[arg(long, default_value_t = 256)]
    window: u64,
    /// Segments per GSO send in the GSO/GRO rows (capped so a send stays
    /// under 64 KiB: 46 at 1400 B).
    #[arg(long, default_value_t = 64)]
    gso_segments: usize,
    /// Loopback address to run on (127.0.0.1 or ::1 style, port ignored).
    #[arg(long, default_value = "127.0.0.1:0", value_parser = parse_addr)]
    bind: SocketAddr,
    /// Print {"runs":[...]} JSON instead of the table.
    #[arg(long)]
    json: bool,
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>().map_err(|_| {
        format!("'{s}' is not an address with a port (expected e.g. 127.0.0.1:9000 or [::1]:9000)")
    })
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !(v.is_finite() && v > 0.0 && v <= 86400.0 * 365.0) {
        return Err(format!("'{s}': seconds must be > 0 and at most a year"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_secs_or_zero(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    parse_secs(s)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("'{s}' is not a rate in datagrams per second"))?;
    if !(v.is_finite() && (1.0..=100e6).contains(&v)) {
        return Err(format!("rate {s} must be 1..100000000 datagrams/s"));
    }
    Ok(v)
}

/// Resolves HOST:PORT (a name, an IPv4 address, or [IPv6]:PORT).
fn resolve(target: &str) -> Result<SocketAddr, Failure> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = target.parse::<SocketAddr>() {
        return Ok(a);
    }
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| usage(format!("target '{target}' needs a port (HOST:PORT)")))?;
    let _: u16 = port
        .parse()
        .map_err(|_| usage(format!("target '{target}': '{port}' is not a port")))?;
    if host.is_empty() {
        return Err(usage(format!("target '{target}' has no host")));
    }
    let mut addrs = target
        .to_socket_addrs()
        .map_err(|e| usage(format!("cannot resolve '{host}': {e}")))?;
    addrs
        .next()
        .ok_or_else(|| usage(format!("'{host}' resolves to no address")))
}

fn parse_size(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a size in bytes"))?;
    if v == 0 || v > udpring::MAX_UDP_PAYLOAD {
        return Err(format!("size {v} must be 1..{}", udpring::MAX_UDP_PAYLOAD));
    }
    Ok(v)
}

/// A failure: usage errors exit 2, runtime errors 1.
struct Failure {
    code: u8,
    msg: String,
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        msg: msg.into(),
    }
}

fn runtime(e: std::io::Error) -> Failure {
    let code = if e.kind() == std::io::ErrorKind::InvalidInput {
        2
    } else {
        1
    };
    Failure {
        code,
        msg: e.to_string(),
    }
}

fn rate_line(t: f64, now: &Stats, prev: &Stats, dt: f64) -> String {
    format!(
        "t={t:>6.1}s rx {:>10.0}/s tx {:>10.0}/s  rx {:>8.3} Gbit/s  trunc {} enobufs {} kdrops {} send-err {}",
        (now.received - prev.received) as f64 / dt,
        (now.sent - prev.sent) as f64 / dt,
        (now.bytes_received - prev.bytes_received) as f64 * 8.0 / dt / 1e9,
        now.truncated,
        now.enobufs,
        now.kernel_drops,
        now.send_errors_total(),
    )
}

fn totals(s: &Stats) -> String {
    format!(
        "totals: received {} sent {} bytes-in {} bytes-out {} truncated {} enobufs {} kernel-drops {} \
         send-exhausted {} error-events {} invalid {} send-errors {} slots-out {}/{}{}",
        s.received,
        s.sent,
        s.bytes_received,
        s.bytes_sent,
        s.truncated,
        s.enobufs,
        s.kernel_drops,
        s.send_exhausted,
        s.error_events,
        s.invalid_completions,
        s.send_errors_text(),
        s.slots_out,
        s.slots_total,
        if s.gso_disabled {
            " (GSO turned off by the kernel)"
        } else {
            ""
        }
    )
}

/// Waits until SIGINT/SIGTERM or `end` (from now); unless `quiet`, calls
/// `tick(seconds since start, seconds since the last tick)` about once a
/// second for a progress line.
fn run_until(end: Option<Duration>, quiet: bool, mut tick: impl FnMut(f64, f64)) {
    let start = Instant::now();
    let mut last = start;
    loop {
        std::thread::sleep(Duration::from_millis(50));
        if udpring::signals::requested() || end.is_some_and(|d| start.elapsed() >= d) {
            return;
        }
        if !quiet && last.elapsed() >= Duration::from_secs(1) {
            tick(start.elapsed().as_secs_f64(), last.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
            last = Instant::now();
        }
    }
}

fn echo(a: EchoArgs) -> Result<(), Failure> {
    let cfg = a.engine.config(a.bind);
    cfg.validate().map_err(usage)?;
    udpring::signals::install().map_err(runtime)?;
    let (sockperf, discard) = (a.sockperf, a.discard);
    let engine = Engine::start(cfg, move |_| Echo {
        sockperf,
        discard,
        ..Echo::default()
    })
    .map_err(runtime)?;
    if let Some(why) = engine.fallback_reason() {
        eprintln!("udpring: note: {why}");
    }
    let info = engine.socket_info();
    println!(
        "udpring echo: listening on {} (backend {}, {} worker{}, rcvbuf {} sndbuf {}{}{}{})",
        engine.local_addr(),
        engine.backend(),
        engine.workers(),
        if engine.workers() == 1 { "" } else { "s" },
        info.recv_buffer,
        info.send_buffer,
        if info.gro { ", gro" } else { "" },
        if sockperf { ", sockperf" } else { "" },
        if discard { ", discard" } else { "" },
    );
    let _ = std::io::stdout().flush();
    let mut prev = Stats::default();
    run_until(a.duration, a.quiet, |t, dt| {
        let now = engine.stats();
        println!("{}", rate_line(t, &now, &prev, dt));
        prev = now;
    });
    let s = engine.stop().map_err(runtime)?;
    if a.json {
        println!("{}", serde_json::to_string(&s).unwrap_or_default());
    } else {
        println!("{}", totals(&s));
    }
    Ok(())
}

fn bench_cmd(a: BenchArgs) -> Result<(), Failure> {
    if !a.bind.ip().is_loopback() {
        return Err(usage(format!(
            "--bind {}: bench runs on loopback only (127.0.0.0/8 or ::1)",
            a.bind
        )));
    }
    let backends: Vec<Backend> = if a.backend.is_empty() {
        let mut v = vec![Backend::Simple, Backend::Mmsg];
        match udpring::uring_support() {
            Ok(()) => v.push(Backend::Uring),
            Err(why) => eprintln!("udpring: note: skipping uring: {why}"),
        }
        v
    } else {
        a.backend.clone()
    };
    let mut cases = bench::default_cases(&backends, a.compare);
    if !a.size.is_empty() {
        let mut v = Vec::new();
        for c in cases.iter().filter(|c| c.size == 64) {
            for &size in &a.size {
                if c.workload == bench::Workload::Flood || size == a.size[0] {
                    v.push(bench::Case { size, ..*c });
                }
            }
        }
        cases = v;
    }
    match a.only.as_deref() {
        Some("flood") => cases.retain(|c| c.workload == bench::Workload::Flood),
        Some("ping") => cases.retain(|c| c.workload == bench::Workload::Ping),
        _ => {}
    }
    if let Some(&small) = a
        .size
        .iter()
        .find(|&&s| s < udpring::apps::header::HEADER_LEN)
    {
        return Err(usage(format!(
            "--size {small}: the load generator's header takes {} bytes",
            udpring::apps::header::HEADER_LEN
        )));
    }
    let opts = BenchOpts {
        duration: a.duration,
        warmup: a.warmup,
        client_backend: None,
        window: a.window.max(1),
        gso_segments: a.gso_segments.clamp(1, 64),
        bind: SocketAddr::new(a.bind.ip(), 0),
    };
    let mut results = Vec::new();
    for c in cases {
        if !a.json {
            eprint!(
                "running {:?} {} {} B{} ... ",
                c.workload,
                c.backend,
                c.size,
                if c.gso { " gso/gro" } else { "" }
            );
        }
        let r = bench::run_case(c, &opts).map_err(runtime)?;
        if !a.json {
            eprintln!("{:.0} echoed/s", r.pps);
        }
        results.push(r);
    }
    if a.json {
        let v = serde_json::json!({ "runs": results });
        println!("{v}");
    } else {
        print!("{}", bench::table(&results));
    }
    Ok(())
}

fn load_cmd(a: LoadArgs) -> Result<(), Failure> {
    use std::sync::atomic::AtomicBool;
    use udpring::apps::load::{LoadOpts, Mode, run_load};
    let target = resolve(&a.target)?;
    let mut o = LoadOpts::new(target);
    o.mode = match (a.rate, a.mode.as_str()) {
        (Some(r), "flood") => Mode::Rate(r),
        (Some(_), _) => {
            return Err(usage(
                "--rate is an open loop: it does not go with --mode ping",
            ));
        }
        (None, "ping") => Mode::Ping,
        _ => Mode::Flood,
    };
    o.size = a.size;
    o.flows = a.flows;
    o.workers = a.workers;
    o.count = a.count;
    o.duration = match (a.duration, a.count) {
        (Some(d), _) => Some(d),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(5)),
    };
    o.warmup = a.warmup;
    o.gso = a.gso;
    o.window = a.window;
    o.drain = a.drain;
    o.ping_timeout = a.timeout;
    o.backend = a.backend;
    o.bind = a.bind;
    o.sockperf = a.sockperf;
    o.connect = !a.unconnected;
    o.multicast_ttl = a.ttl;
    o.busy_poll = a.busy_poll;
    o.first_cpu = a.cpu;
    o.validate().map_err(usage)?;
    udpring::signals::install().map_err(runtime)?;
    let cancel = AtomicBool::new(false);
    let quiet = a.quiet;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if udpring::signals::requested() {
                    cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let r = run_load(&o, &cancel, |p| {
            if !quiet {
                eprintln!("{}", p.line());
            }
        });
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = watcher.join();
        let report = r.map_err(runtime)?;
        print_report(&report, a.json, a.hist_out.as_deref())?;
        if report.sent > 0 && report.received == 0 {
            eprintln!(
                "udpring: warning: no replies from {target}: is an echo server listening there?"
            );
        }
        Ok(())
    })
}

fn print_report(
    r: &udpring::apps::load::LoadReport,
    json: bool,
    hist_out: Option<&std::path::Path>,
) -> Result<(), Failure> {
    if let Some(path) = hist_out {
        let text = r
            .percentile_text()
            .map_err(|e| Failure { code: 1, msg: e })?;
        std::fs::write(path, text).map_err(|e| Failure {
            code: 1,
            msg: format!("{}: {e}", path.display()),
        })?;
    }
    if json {
        println!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        print!("{}", r.table());
    }
    Ok(())
}

fn report_cmd(a: ReportArgs) -> Result<(), Failure> {
    use udpring::apps::load::LoadReport;
    let mut reports = Vec::new();
    for f in &a.files {
        let text =
            std::fs::read_to_string(f).map_err(|e| usage(format!("{}: {e}", f.display())))?;
        let r: LoadReport = serde_json::from_str(text.trim()).map_err(|e| {
            usage(format!(
                "{}: not a `udpring load --json` result: {e}",
                f.display()
            ))
        })?;
        reports.push(r);
    }
    let merged = LoadReport::merge(&reports).map_err(usage)?;
    print_report(&merged, a.json, a.hist_out.as_deref())
}

fn pmtu_cmd(a: PmtuArgs) -> Result<(), Failure> {
    use udpring::apps::pmtu::{Method, PmtuOpts, discover};
    let target = if a.target.parse::<SocketAddr>().is_ok()
        || a.target
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && !h.contains(':') && p.parse::<u16>().is_ok())
        || a.target.starts_with('[')
    {
        resolve(&a.target)?
    } else {
        // No port given: the echo port.
        let host = a.target.trim_start_matches('[').trim_end_matches(']');
        let with_port = if host.contains(':') {
            format!("[{host}]:7")
        } else {
            format!("{host}:7")
        };
        resolve(&with_port)?
    };
    let mut o = PmtuOpts::new(target);
    o.method = match a.method.as_str() {
        "icmp" => Method::Icmp,
        "plpmtud" => Method::Plpmtud,
        _ => Method::Auto,
    };
    o.timeout = a.timeout;
    o.tries = a.tries;
    o.floor_v4 = a.floor;
    let r = discover(&o).map_err(runtime)?;
    if a.json {
        println!("{}", serde_json::to_string(&r).unwrap_or_default());
    }
    match (r.pmtu, &r.error) {
        (Some(m), _) => {
            if !a.json {
                println!(
                    "{target}: pmtu {m} (method {:?}, {} probes, {} ms)",
                    r.method, r.probes, r.elapsed_ms
                );
            }
            Ok(())
        }
        (None, why) => Err(Failure {
            code: 1,
            msg: format!(
                "{target}: path MTU not found by {:?} after {} probes: {}",
                r.method,
                r.probes,
                why.as_deref().unwrap_or("no answer")
            ),
        }),
    }
}

fn ping_cmd(a: PingArgs) -> Result<(), Failure> {
    use udpring::apps::reqresp::{Backoff, Outcome, RequestClient};
    let target = resolve(&a.target)?;
    if target.port() == 0 {
        return Err(usage("port 0: give the port the echo server listens on"));
    }
    if !(a.backoff.is_finite() && a.backoff >= 1.0 && a.backoff <= 100.0) {
        return Err(usage(format!("--backoff {} must be 1..100", a.backoff)));
    }
    let backoff = Backoff {
        initial: a.timeout,
        factor: a.backoff,
        max: a.max_timeout.max(a.timeout),
        attempts: a.attempts,
    };
    let mut c = RequestClient::new(target, backoff, a.size).map_err(runtime)?;
    let mut rtts = Vec::new();
    for i in 0..a.count {
        if i > 0 {
            std::thread::sleep(a.interval);
        }
        match c.request().map_err(runtime)? {
            Outcome::Reply {
                seq,
                rtt,
                attempts,
                len,
            } => {
                rtts.push(rtt.as_secs_f64() * 1e3);
                if !a.json {
                    println!(
                        "{len} bytes from {target}: id {seq:#x} time {:.3} ms{}",
                        rtt.as_secs_f64() * 1e3,
                        if attempts > 1 {
                            format!(" (attempt {attempts})")
                        } else {
                            String::new()
                        }
                    );
                }
            }
            Outcome::ServerDown {
                seq,
                attempts,
                waited,
            } => {
                if !a.json {
                    println!(
                        "no reply to id {seq:#x} after {attempts} attempts over {:.1} s: {target} looks down",
                        waited.as_secs_f64()
                    );
                }
            }
        }
    }
    let s = c.stats;
    let (min, max) = rtts
        .iter()
        .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let avg = if rtts.is_empty() {
        0.0
    } else {
        rtts.iter().sum::<f64>() / rtts.len() as f64
    };
    if a.json {
        let v = serde_json::json!({
            "target": target.to_string(), "stats": s,
            "rtt_ms": if rtts.is_empty() { serde_json::Value::Null } else { serde_json::json!({"min": min, "avg": avg, "max": max}) },
        });
        println!("{v}");
    } else {
        println!(
            "--- {target}: {} requests, {} replies, {} retransmissions, {} looked down; discarded: {} wrong id, {} wrong address, {} malformed",
            s.requests, s.replies, s.retransmits, s.down, s.wrong_id, s.wrong_addr, s.malformed
        );
        if !rtts.is_empty() {
            println!("rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
        }
    }
    if s.down > 0 {
        return Err(Failure {
            code: 1,
            msg: format!(
                "{target} looked down for {} of {} requests",
                s.down, s.requests
            ),
        });
    }
    Ok(())
}

fn fanout_cmd(a: FanoutArgs) -> Result<(), Failure> {
    use std::sync::atomic::Ordering::Relaxed;
    use udpring::apps::fanout::{Fanout, FanoutCounters};
    use udpring::{Interface, Join};
    let mut cfg = a.engine.config(a.listen);
    let iface = match &a.iface {
        Some(name) => {
            udpring::interface_index(name).map_err(|e| usage(e.to_string()))?;
            Interface::Name(name.clone())
        }
        None => Interface::Any,
    };
    for &(group, source) in &a.join {
        if group.is_ipv6() != a.listen.is_ipv6() {
            return Err(usage(format!(
                "--join {group}: not of --listen {}'s family",
                a.listen
            )));
        }
        cfg.multicast.joins.push(Join {
            group,
            source,
            interface: iface.clone(),
        });
    }
    if let Some(d) =
        a.to.iter()
            .find(|d| d.is_ipv6() != a.listen.is_ipv6() && !a.listen.is_ipv6())
    {
        return Err(usage(format!(
            "--to {d}: an IPv4 socket cannot send to IPv6"
        )));
    }
    if a.iface.is_some() {
        cfg.multicast.interface = Some(iface.clone());
    }
    cfg.multicast.ttl = a.ttl;
    cfg.reuse_addr = !a.join.is_empty();
    cfg.validate().map_err(usage)?;
    udpring::signals::install().map_err(runtime)?;
    let counters = FanoutCounters::new(a.to.len());
    let (c2, dests) = (counters.clone(), a.to.clone());
    let engine =
        Engine::start(cfg, move |_| Fanout::new(dests.clone(), c2.clone())).map_err(runtime)?;
    println!(
        "udpring fanout: listening on {} (backend {}), relaying to {}",
        engine.local_addr(),
        engine.backend(),
        a.to.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = std::io::stdout().flush();
    let mut prev = 0;
    run_until(a.duration, a.quiet, |t, dt| {
        let now = counters.received.load(Relaxed);
        println!(
            "t={t:>6.1}s in {:>10.0}/s  out {:>10.0}/s",
            (now - prev) as f64 / dt,
            (now - prev) as f64 * a.to.len() as f64 / dt
        );
        prev = now;
    });
    let s = engine.stop().map_err(runtime)?;
    let per: Vec<serde_json::Value> = a
        .to
        .iter()
        .zip(&counters.dests)
        .map(|(d, c)| {
            serde_json::json!({"to": d.to_string(), "forwarded": c.forwarded.load(Relaxed), "refused": c.refused.load(Relaxed)})
        })
        .collect();
    if a.json {
        let v = serde_json::json!({
            "received": counters.received.load(Relaxed), "destinations": per,
            "sent": s.sent, "send_errors": s.send_errors_total(), "slots_out": s.slots_out,
        });
        println!("{v}");
    } else {
        println!(
            "received {} sent {} send-errors {}",
            counters.received.load(Relaxed),
            s.sent,
            s.send_errors_text()
        );
        for p in per {
            println!(
                "  to {} forwarded {} refused {}",
                p["to"].as_str().unwrap_or(""),
                p["forwarded"],
                p["refused"]
            );
        }
    }
    Ok(())
}

fn mcast_cmd(c: McastCmd) -> Result<(), Failure> {
    use std::sync::Arc;
    use udpring::apps::mcast::{McastListen, McastPing, McastSend, PeerTable};
    use udpring::{Interface, Join};
    let (kind, a) = match c {
        McastCmd::Listen(a) => ("listen", a),
        McastCmd::Send(a) => ("send", a),
        McastCmd::Pong(a) => ("pong", a),
        McastCmd::Ping(a) => ("ping", a),
    };
    let group = parse_group(&a.group)?;
    let max = if group.is_ipv6() {
        udpring::MAX_UDP6_PAYLOAD
    } else {
        udpring::MAX_UDP_PAYLOAD
    };
    if !(udpring::apps::header::HEADER_LEN..=max).contains(&a.size) {
        return Err(usage(format!("--size {} must be 32..{max}", a.size)));
    }
    if !(a.rate.is_finite() && a.rate > 0.0 && a.rate <= 10e6) {
        return Err(usage(format!(
            "--rate {} must be > 0 and at most 10000000",
            a.rate
        )));
    }
    if let Some(s) = a.source
        && (s.is_ipv6() != group.is_ipv6() || s.is_multicast())
    {
        return Err(usage(format!(
            "--source {s} does not go with group {}",
            group.ip()
        )));
    }
    let iface = match (&a.iface, group) {
        (Some(n), _) => {
            udpring::interface_index(n).map_err(|e| usage(e.to_string()))?;
            Interface::Name(n.clone())
        }
        (None, SocketAddr::V6(v6)) if v6.scope_id() != 0 => Interface::Index(v6.scope_id()),
        _ => Interface::Any,
    };
    let unspecified: std::net::IpAddr = if group.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    let receiver = matches!(kind, "listen" | "pong");
    let mut cfg = Config::new(SocketAddr::new(
        unspecified,
        if receiver { group.port() } else { 0 },
    ));
    cfg.workers = 1;
    cfg.reuse_addr = receiver;
    cfg.multicast.ttl = Some(a.ttl);
    cfg.multicast.loopback = Some(!a.no_loop);
    if iface != Interface::Any {
        cfg.multicast.interface = Some(iface.clone());
    }
    if receiver {
        cfg.multicast.joins.push(Join {
            group: group.ip(),
            source: a.source,
            interface: iface.clone(),
        });
    }
    udpring::signals::install().map_err(runtime)?;
    let table: PeerTable = Arc::default();
    let t2 = table.clone();
    let (verify, rate, size, count) = (a.verify, a.rate, a.size, a.count);
    let engine = match kind {
        "listen" => Engine::start(cfg, move |_| McastListen::new(verify, t2.clone())),
        "pong" => Engine::start(cfg, |_| Echo::new()),
        "send" => Engine::start(cfg, move |_| McastSend::new(group, rate, size, count)),
        _ => Engine::start(cfg, move |_| {
            McastPing::new(group, rate, size, count.unwrap_or(10), t2.clone())
        }),
    }
    .map_err(runtime)?;
    eprintln!(
        "udpring mcast {kind}: {group} (local {}, backend {})",
        engine.local_addr(),
        engine.backend()
    );
    // ping and a counted send end by themselves: after the last datagram
    // (plus a drain for replies).
    let natural_end = match (kind, count) {
        ("ping", c) => Some(
            Duration::from_secs_f64(c.unwrap_or(10) as f64 / rate) + Duration::from_millis(500),
        ),
        ("send", Some(c)) => {
            Some(Duration::from_secs_f64(c as f64 / rate) + Duration::from_millis(100))
        }
        _ => None,
    };
    let end = match (a.duration, natural_end) {
        (Some(d), _) => Some(d),
        (None, e) => e,
    };
    run_until(end, true, |_, _| {});
    let stats = engine.stop().map_err(runtime)?;
    let peers = table.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if a.json {
        let v = serde_json::json!({
            "command": kind, "group": group.to_string(), "sent": stats.sent, "received": stats.received,
            "peers": peers.iter().map(|(p, c)| serde_json::json!({"addr": p.to_string(), "counts": c})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!(
        "{kind} {group}: sent {} received {}",
        stats.sent, stats.received
    );
    for (p, c) in peers {
        let rtt = c.rtt_us.as_ref().map_or(String::new(), |r| {
            format!(
                "  rtt p50 {:.1} p99 {:.1} max {:.1} us",
                r.p50, r.p99, r.max
            )
        });
        println!(
            "  {p}: received {} lost {} duplicated {} reordered {}{rtt}",
            c.received, c.lost, c.duplicated, c.reordered
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            // One line: clap's first paragraph (which can list the missing
            // arguments on lines of their own), joined, without its own
            // "error: " prefix.
            let text = e.render().to_string();
            let para: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            let joined = para.join(" ");
            let first = joined.strip_prefix("error: ").unwrap_or(&joined);
            let first = if first.is_empty() {
                "invalid arguments"
            } else {
                first
            };
            eprintln!("udpring: error: {first} (see 'udpring --help')");
            return ExitCode::from(2);
        }
    };
    let r = match cli.cmd {
        Cmd::Echo(a) => echo(a),
        Cmd::Bench(a) => bench_cmd(a),
        Cmd::Load(a) => load_cmd(a),
        Cmd::Report(a) => report_cmd(a),
        Cmd::Pmtu(a) => pmtu_cmd(a),
        Cmd::Ping(a) => ping_cmd(a),
        Cmd::Fanout(a) => fanout_cmd(a),
        Cmd::Mcast(c) => mcast_cmd(c),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("udpring: error: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}
