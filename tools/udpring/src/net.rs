//! `udpring pmtu` and `udpring ping`: one path, one server.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::apps::load::Match;
use crate::apps::reqresp::Form;
use crate::common::{Failure, parse_secs, parse_secs_or_zero, resolve, runtime, usage};

#[derive(Args)]
#[command(
    after_help = "Each request carries a random ID; only a reply with that ID from the\n\
    server's address counts (others are counted as wrong-id / wrong-address).\n\
    A service that is not an echo server gets --payload, and its replies are\n\
    matched by --match: flow (any datagram from the server while a request waits\n\
    answers it) or id:OFFSET:LEN (an ID written into each request, which the\n\
    service copies back at the same offset), e.g.\n  \
    udpring ping 127.0.0.1:1060 --payload $(printf 'hello' | xxd -p) --match flow\n\
    An unanswered request is sent again after --timeout, then --timeout x --backoff,\n\
    ... up to --max-timeout, --attempts sends in all. An ICMP error about a request\n\
    from the server's address (port unreachable: nothing listens there; host or\n\
    network unreachable) ends that request at once. SIGINT stops early and prints\n\
    the summary. Exit code 1 if the server looked down or unreachable for any\n\
    request, or, with --expect, a reply lacked its bytes (a health check that\n\
    an answer is the one meant: --expect 8:56414c5545 for memcached's VALUE)."
)]
pub(crate) struct PingArgs {
    /// HOST:PORT of an echo server (or, with --payload, of any
    /// request/response service).
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
    /// Each retransmission waits this many times longer (1..100, default
    /// 2).
    #[arg(long)]
    backoff: Option<f64>,
    /// Longest wait between sends, seconds (default 2, or --timeout if
    /// that is longer).
    #[arg(long, value_parser = parse_secs)]
    max_timeout: Option<Duration>,
    /// Sends per request before the server looks down.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    attempts: u32,
    /// Request size in bytes (32..65507; 65527 over IPv6).
    #[arg(long, short = 's', default_value_t = 64,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(32..=65527))]
    size: usize,
    /// Send this payload (hex, e.g. 68656c6c6f for "hello") instead of
    /// udpring's header, to a service that is not an echo server; say how
    /// replies match with --match.
    #[arg(long, value_name = "HEX", conflicts_with = "size")]
    payload: Option<String>,
    /// How a reply is matched to its request: header (udpring's own, the
    /// default without --payload); flow (any datagram from the server while
    /// the request waits answers it, as a client on a connected socket
    /// takes it); id:OFFSET:LEN (the request's number, LEN bytes big-endian,
    /// written into the payload at OFFSET, and looked for there in the
    /// reply).
    #[arg(long = "match", value_name = "HOW", value_parser = Match::parse)]
    matching: Option<Match>,
    /// With --payload, check every reply: it must carry these bytes at
    /// byte OFFSET (OFFSET:HEX; OFFSET:HEX/MASK, only the mask's bits;
    /// any:HEX, anywhere: as `load --expect`). A reply without them
    /// still answers its request, is shown and counted as unexpected, and
    /// the exit code is 1: the service answered, not with what was asked.
    #[arg(long, value_name = "OFFSET:HEX[/MASK]|any:HEX", requires = "payload",
          value_parser = crate::apps::load::expect::Expect::parse)]
    expect: Vec<crate::apps::load::expect::Expect>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// What `ping`'s requests carry, from --size, --payload and --match.
fn ping_form(a: &PingArgs) -> Result<Form, Failure> {
    let bytes = a
        .payload
        .as_deref()
        .map(|h| crate::apps::load::payload::hex(h).map_err(|e| usage(format!("--payload: {e}"))))
        .transpose()?;
    Ok(match (bytes, a.matching) {
        (_, Some(Match::None)) => {
            return Err(usage(
                "--match none: ping waits for each reply (one-way traffic is `load --match none`)",
            ));
        }
        (None, None | Some(Match::Header)) => Form::Header { size: a.size },
        (None, Some(m)) => {
            return Err(usage(format!(
                "--match {} goes with --payload: udpring's own requests are matched by their header",
                m.name()
            )));
        }
        (Some(_), None | Some(Match::Header)) => {
            return Err(usage(
                "a payload of your own is not udpring's header: say how replies match requests \
                 (--match flow or id:OFFSET:LEN)",
            ));
        }
        (Some(bytes), Some(Match::Flow)) => Form::Payload { bytes, id: None },
        (Some(bytes), Some(Match::Id { offset, len })) => {
            if offset + len > bytes.len() {
                return Err(usage(format!(
                    "--match id:{offset}:{len} ends past the {}-byte payload",
                    bytes.len()
                )));
            }
            Form::Payload {
                bytes,
                id: Some((offset, len)),
            }
        }
    })
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
pub(crate) struct PmtuArgs {
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
    /// IPv4 floor for plpmtud (known to pass; 68..65535, default 1200;
    /// IPv6 uses 1280).
    #[arg(long, value_parser = clap::value_parser!(u32).range(68..=65535))]
    floor: Option<u32>,
    /// Print {pmtu, method, probes, duration_s, ...} as JSON.
    #[arg(long)]
    json: bool,
}

/// A usage error for a group as the target of a command that talks to
/// one host (`what` it measures): its socket would hear no answer, and
/// the datagrams would leave by the multicast route's interface.
fn unicast_only(target: SocketAddr, cmd: &str, what: &str) -> Result<(), Failure> {
    if target.ip().is_multicast() {
        return Err(usage(format!(
            "{target} is a multicast group, and `{cmd}` measures {what}: `udpring mcast ping \
             {target} --iface NAME` pings a group"
        )));
    }
    Ok(())
}

pub(crate) fn pmtu(a: PmtuArgs) -> Result<(), Failure> {
    use crate::apps::pmtu::{Method, PmtuOpts, discover};
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
    unicast_only(target, "pmtu", "the path MTU to one host")?;
    let mut o = PmtuOpts::new(target);
    o.method = match a.method.as_str() {
        "icmp" => Method::Icmp,
        "plpmtud" => Method::Plpmtud,
        _ => Method::Auto,
    };
    o.timeout = a.timeout;
    o.tries = a.tries;
    if let Some(f) = a.floor {
        // The floor is where plpmtud's search starts on IPv4: with ICMP
        // alone, or on IPv6 (1280), it would be accepted and mean nothing.
        if o.method == Method::Icmp || target.is_ipv6() {
            return Err(usage(format!(
                "--floor {f} is plpmtud's IPv4 floor: {}",
                if target.is_ipv6() {
                    "an IPv6 path's floor is 1280, its minimum MTU"
                } else {
                    "--method icmp sends no plpmtud probe"
                }
            )));
        }
        o.floor_v4 = f;
    }
    let r = discover(&o).map_err(runtime)?;
    if let Some(n) = r.echo_cut_at {
        note!(
            "udpring: note: the echo at {target} returned probes cut to {n} bytes (its buffer is \
             smaller); they reached it whole, so they count as passed"
        );
    }
    if a.json {
        crate::common::say_json("pmtu", None, &r);
    }
    match (r.pmtu, &r.error) {
        (Some(m), _) => {
            if !a.json {
                say!(
                    "{target}: pmtu {m} (method {}, {} probes, {:.3} s)",
                    r.method.name(),
                    r.probes,
                    r.duration_s
                );
            }
            Ok(())
        }
        (None, why) => Err(Failure {
            code: 1,
            msg: format!(
                "{target}: path MTU not found by {} after {} probes: {}",
                r.method.name(),
                r.probes,
                why.as_deref().unwrap_or("no answer")
            ),
        }),
    }
}

pub(crate) fn ping(a: PingArgs) -> Result<(), Failure> {
    use crate::apps::reqresp::{Backoff, Outcome, RequestClient};
    let form = ping_form(&a)?;
    let matching = match &form {
        Form::Header { .. } => Match::Header,
        Form::Payload { id: None, .. } => Match::Flow,
        Form::Payload {
            id: Some((offset, len)),
            ..
        } => Match::Id {
            offset: *offset,
            len: *len,
        },
    };
    let target = resolve(&a.target)?;
    if target.port() == 0 {
        return Err(usage("port 0: give the port the echo server listens on"));
    }
    unicast_only(target, "ping", "one server's answers")?;
    let factor = a.backoff.unwrap_or(2.0);
    if !(factor.is_finite() && (1.0..=100.0).contains(&factor)) {
        return Err(usage(format!("--backoff {factor} must be 1..100")));
    }
    // What shapes retransmissions, where there are none; a cap below the
    // first wait.
    if a.attempts == 1
        && let Some(flag) = [
            (a.backoff.is_some(), "--backoff"),
            (a.max_timeout.is_some(), "--max-timeout"),
        ]
        .iter()
        .find_map(|(given, f)| given.then_some(f))
    {
        return Err(usage(format!(
            "{flag} shapes the waits between retransmissions, and --attempts 1 sends each \
             request once"
        )));
    }
    if let Some(m) = a.max_timeout.filter(|m| *m < a.timeout) {
        return Err(usage(format!(
            "--max-timeout {:.3} s is below --timeout {:.3} s, the first wait",
            m.as_secs_f64(),
            a.timeout.as_secs_f64()
        )));
    }
    let backoff = Backoff {
        initial: a.timeout,
        factor,
        max: a
            .max_timeout
            .unwrap_or(Duration::from_secs(2))
            .max(a.timeout),
        attempts: a.attempts,
    };
    let mut c = RequestClient::with_form(target, backoff, form).map_err(runtime)?;
    c.expect = a.expect.clone();
    let checks = crate::apps::load::expect::listed(&a.expect);
    let mut first_unexpected = None;
    udpring::signals::install().map_err(runtime)?;
    let mut rtts = Vec::new();
    let mut hist = crate::apps::load::new_histogram();
    let started = std::time::Instant::now();
    for i in 0..a.count {
        if i > 0 {
            crate::common::sleep_unless_stopped(a.interval);
        }
        if crate::common::stop_requested() {
            break;
        }
        match c.request().map_err(runtime)? {
            Outcome::Reply {
                seq,
                rtt,
                attempts,
                len,
                unexpected,
            } => {
                rtts.push(rtt.as_secs_f64() * 1e3);
                // Clamped into the histogram's range (1 ns .. 60 s).
                let _ = hist.record((rtt.as_nanos() as u64).clamp(1, 60_000_000_000));
                if !a.json {
                    say!(
                        "{len} bytes from {target}: {} time {:.3} ms{}{}{}",
                        c.form().label(seq),
                        rtt.as_secs_f64() * 1e3,
                        if attempts > 1 {
                            format!(" (attempt {attempts})")
                        } else {
                            String::new()
                        },
                        if matching == Match::Header && len < a.size {
                            format!(" (cut: {len} of the {} bytes sent)", a.size)
                        } else {
                            String::new()
                        },
                        match &unexpected {
                            Some(began) => format!(" (unexpected: {began})"),
                            None => String::new(),
                        }
                    );
                }
                if first_unexpected.is_none() {
                    first_unexpected = unexpected;
                }
            }
            Outcome::ServerDown {
                seq,
                attempts,
                waited,
            } => {
                if !a.json {
                    say!(
                        "no reply to {} after {attempts} attempts over {:.1} s: {target} looks down",
                        c.form().label(seq),
                        waited.as_secs_f64()
                    );
                }
            }
            Outcome::Unreachable {
                seq,
                attempts,
                error,
            } => {
                if !a.json {
                    say!(
                        "{}: {error}; ICMP after {attempts} send{}",
                        c.form().label(seq),
                        if attempts == 1 { "" } else { "s" }
                    );
                }
            }
            Outcome::Stopped { .. } => break,
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
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["target"] = target.to_string().into();
        v["match"] = matching.name().into();
        v["expect"] = checks.clone().into();
        v["rtt_us"] = serde_json::to_value(crate::apps::load::RttUs::from_histogram(&hist))
            .unwrap_or_default();
        crate::common::say_json("ping", Some(started.elapsed().as_secs_f64()), v);
    } else {
        say!(
            "--- {target}: {} requests, {} replies, {} retransmissions, {} looked down, {} unreachable; discarded: {} wrong id, {} wrong address, {} malformed",
            s.requests,
            s.replies,
            s.retransmits,
            s.down,
            s.unreachable,
            s.wrong_id,
            s.wrong_addr,
            s.malformed
        );
        if s.truncated > 0 {
            say!(
                "{} of the replies were shorter than the {} bytes sent (cut by the server's \
                 buffer or on the way)",
                s.truncated,
                a.size
            );
        }
        if !a.expect.is_empty() {
            say!(
                "{} of the replies lacked the --expect bytes (unexpected)",
                s.unexpected
            );
        }
        if !rtts.is_empty() {
            say!("rtt min/avg/max = {min:.3}/{avg:.3}/{max:.3} ms");
        }
    }
    if s.replies == 0 && s.down == 0 && s.unreachable == 0 && s.requests > 0 {
        return Err(Failure {
            code: 1,
            msg: format!("no replies from {target} before the stop"),
        });
    }
    if s.down > 0 || s.unreachable > 0 {
        let mut why = Vec::new();
        if s.down > 0 {
            why.push(format!("looked down for {}", s.down));
        }
        if s.unreachable > 0 {
            why.push(format!("was unreachable (ICMP) for {}", s.unreachable));
        }
        let hint = if s.replies == 0 && s.down == 0 {
            ": is a server listening there?".to_string()
        } else if s.wrong_addr > 0 {
            // Replies that came, but not from where the requests went: a
            // service answering from another port or address.
            format!(
                " ({} replies came from other addresses: a service that answers from \
                 another port or address? only the target's count)",
                s.wrong_addr
            )
        } else {
            String::new()
        };
        return Err(Failure {
            code: 1,
            msg: format!(
                "{target} {} of {} requests{hint}",
                why.join(" and "),
                s.requests
            ),
        });
    }
    if let Some(began) = first_unexpected {
        return Err(Failure {
            code: 1,
            msg: format!(
                "{} of {} replies from {target} lacked --expect {} (the first began {began})",
                s.unexpected,
                s.replies,
                checks.join(" and ")
            ),
        });
    }
    Ok(())
}
