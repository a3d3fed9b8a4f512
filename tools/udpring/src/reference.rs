//! `udpring reference`: the kernel-level reference loops, for comparisons
//! (`tools/send-compare.sh`, the `C limit` rows).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::apps::reference;
use clap::{Args, Subcommand};

use crate::common::{Failure, parse_addr, parse_secs, resolve, runtime, usage};

#[derive(Subcommand)]
pub(crate) enum RefCmd {
    /// Send for --duration as a C program would: one send(2) per datagram
    /// on a connected socket, or with --gso N one sendmsg(2) of N segments
    /// (UDP_SEGMENT) per call; with --mmsg M, M such messages per
    /// sendmmsg(2) (the system call of udpring's mmsg backend).
    Send(RefSendArgs),
    /// Receive as a C program would (recvmmsg of 64, UDP_GRO on) and count
    /// datagrams until SIGINT or --duration; the rate is from the first
    /// datagram to the last. Also says what the kernel dropped at its
    /// socket, the buffer full (SO_MEMINFO; a GRO train counts once).
    Sink(RefSinkArgs),
    /// Echo as a C program would: recvmmsg of 64 with UDP_GRO, then one
    /// sendmmsg of them back, each train with its segment size as
    /// UDP_SEGMENT (the GRO -> GSO echo), until SIGINT or --duration. A
    /// udpring server all the same: its answers carry the server mark (TTL
    /// 200) and it does not answer what the engine's guard refuses (other
    /// udpring servers' datagrams, reflector ports, its own port, port 0),
    /// so it never keeps a loop going with another server.
    Echo(RefSinkArgs),
    /// Flood an echo server as a C program would (open loop: send, or
    /// sendmsg + UDP_SEGMENT with --gso) and count its echoes on the same
    /// socket (recvmmsg + GRO, a second thread on the same CPU).
    Flood(RefSendArgs),
}

#[derive(Args)]
pub(crate) struct RefSendArgs {
    /// HOST:PORT to send to.
    target: String,
    /// Datagram (segment) size in bytes.
    #[arg(long, short = 's', default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65507))]
    size: u32,
    /// Segments per sendmsg (UDP_SEGMENT); 1: plain send(2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    gso: u32,
    /// Messages per sendmmsg(2) (each a datagram, or a train with --gso);
    /// 1: one send(2) or sendmsg(2) per message. Only for `send`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    mmsg: u32,
    /// Seconds to send.
    #[arg(long, short = 't', default_value = "3", value_parser = parse_secs)]
    duration: Duration,
    /// Pin to this CPU index (among the CPUs this process may use).
    #[arg(long, value_parser = crate::common::parse_cpu)]
    cpu: Option<usize>,
    /// Print {sent, calls, failed, duration_s, pps_sent} as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub(crate) struct RefSinkArgs {
    /// Address to receive on.
    #[arg(long, short = 'b', default_value = "127.0.0.1:9000", value_parser = parse_addr)]
    bind: SocketAddr,
    /// Seconds to run (default: until SIGINT).
    #[arg(long, short = 't', value_parser = parse_secs)]
    duration: Option<Duration>,
    /// Pin to this CPU index.
    #[arg(long, value_parser = crate::common::parse_cpu)]
    cpu: Option<usize>,
    /// Print {received, received_bufs, duration_s, pps_received} as JSON.
    #[arg(long)]
    json: bool,
    /// Sink only: never sleep (recvmmsg with MSG_DONTWAIT, again at once
    /// when nothing is queued; its CPU at 100%), so that no sender pays
    /// for waking it
    #[arg(long)]
    spin: bool,
}

pub(crate) fn reference(c: RefCmd) -> Result<(), Failure> {
    match c {
        RefCmd::Send(a) => {
            let to = resolve(&a.target)?;
            if to.port() == 0 {
                return Err(usage("port 0: give the port the sink listens on"));
            }
            if a.gso > 1 && (a.size * a.gso) > 65507 {
                return Err(usage(format!(
                    "--size {} x --gso {} is over 65507 bytes, one UDP send",
                    a.size, a.gso
                )));
            }
            let r = reference::send(
                to,
                a.size as usize,
                a.gso as usize,
                a.mmsg as usize,
                a.duration,
                a.cpu,
            )
            .map_err(runtime)?;
            let last = r.last_error.map(udpring::errno_name);
            if a.json {
                crate::common::say_json(
                    "reference",
                    Some(r.duration_s),
                    serde_json::json!({
                        "target": to.to_string(),
                        "sent": r.datagrams,
                        "calls": r.calls,
                        "failed": r.errors,
                        "last_error": last,
                        "pps_sent": r.pps,
                    }),
                );
            } else {
                say!(
                    "reference send to {to}: {} datagrams in {:.2} s = {:.0}/s ({} calls, {} errors{})",
                    r.datagrams,
                    r.duration_s,
                    r.pps,
                    r.calls,
                    r.errors,
                    last.as_ref()
                        .map(|l| format!(", the last {l}"))
                        .unwrap_or_default()
                );
            }
            match (r.datagrams, r.last_error) {
                (0, Some(errno)) => Err(Failure {
                    code: 1,
                    msg: format!(
                        "nothing went out to {to}: every send failed ({}){}",
                        udpring::errno_name(errno),
                        udpring::os::why_unsendable(to, errno)
                            .map(|why| format!(": {why}"))
                            .unwrap_or_default()
                    ),
                }),
                _ => Ok(()),
            }
        }
        RefCmd::Sink(a) => serve(&a, "sink", |stop| {
            reference::sink(a.bind, a.cpu, a.spin, stop, |addr| {
                note!("udpring reference sink: listening on {addr}");
            })
        }),
        RefCmd::Echo(a) if a.spin => Err(usage("--spin is for the sink only")),
        RefCmd::Echo(a) => serve(&a, "echo", |stop| {
            reference::echo(a.bind, a.cpu, stop, |addr| {
                note!("udpring reference echo: listening on {addr}");
            })
        }),
        RefCmd::Flood(a) => {
            let to = resolve(&a.target)?;
            if to.port() == 0 {
                return Err(usage("port 0: give the port the echo listens on"));
            }
            if a.mmsg > 1 {
                return Err(usage(
                    "--mmsg is for `reference send`; the flood sends one call at a time",
                ));
            }
            let f = reference::flood_echo(to, a.size as usize, a.gso as usize, a.duration, a.cpu)
                .map_err(runtime)?;
            if a.json {
                crate::common::say_json(
                    "reference",
                    Some(f.duration_s),
                    serde_json::json!({
                        "target": to.to_string(),
                        "sent": f.sent,
                        "received": f.echoed,
                        "pps_received": f.pps_echoed,
                    }),
                );
            } else {
                say!(
                    "reference flood of {to}: sent {} echoed {} ({:.0}/s echoed)",
                    f.sent,
                    f.echoed,
                    f.pps_echoed
                );
            }
            Ok(())
        }
    }
}

/// Runs a receiving reference loop until SIGINT or `--duration`, then
/// prints what it counted.
fn serve(
    a: &RefSinkArgs,
    what: &str,
    run: impl FnOnce(&AtomicBool) -> std::io::Result<reference::RefReport> + Send,
) -> Result<(), Failure> {
    udpring::signals::install().map_err(runtime)?;
    let stop = AtomicBool::new(false);
    let r = std::thread::scope(|s| {
        let h = crate::common::spawn_scoped(s, "udpring-ref", || run(&stop))?;
        let start = std::time::Instant::now();
        while !h.is_finished()
            && !crate::common::stop_requested()
            && a.duration.is_none_or(|d| start.elapsed() < d)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::Relaxed);
        h.join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the loop panicked")))
    })
    .map_err(runtime)?;
    if a.json {
        // The sink's duration is from its first datagram to its last; the
        // echo's, its whole run.
        let (count, bufs, rate) = if what == "echo" {
            ("sent", "sent_bufs", "pps_sent")
        } else {
            ("received", "received_bufs", "pps_received")
        };
        let mut v = serde_json::json!({ count: r.datagrams, bufs: r.calls, rate: r.pps });
        if what == "echo" {
            v["guard"] = serde_json::to_value(r.refused).unwrap_or_default();
        } else {
            v["kernel_drops"] = r.kernel_drops.into();
        }
        crate::common::say_json("reference", Some(r.duration_s), v);
    } else {
        say!(
            "reference {what}: {} datagrams in {} buffers over {:.2} s = {:.0}/s",
            r.datagrams,
            r.calls,
            r.duration_s,
            r.pps
        );
        if what != "echo" {
            say!(
                "dropped by the kernel, receive buffer full: {} buffers (a GRO train counts once)",
                r.kernel_drops
            );
        }
        if what == "echo" {
            let g = r.refused;
            say!(
                "not answered: {} (guard-marked {} guard-loop {} guard-port {} guard-bad-source {}: \
                 udpring servers' datagrams, its own port, reflector ports, port 0)",
                g.total(),
                g.guard_marked,
                g.guard_loop,
                g.guard_port,
                g.guard_bad_source
            );
        }
    }
    Ok(())
}
