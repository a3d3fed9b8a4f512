//! `udpring mcast listen|send|pong|ping`: each subcommand's run (their
//! options and checks are in [`args`]).

mod args;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use udpring::{Config, Engine};

use crate::apps::mcast::ping::{McastPing, PingPayload};
use crate::apps::mcast::{
    Expect, McastListen, McastPong, McastSend, PeerCounts, PeerTable, PongCounts,
};
use crate::common::{Failure, runtime};
use crate::serve::run_until;
pub(crate) use args::McastCmd;
use args::{Group, McastArgs, ping_payload, pong_expect};

pub(crate) fn mcast(c: McastCmd) -> Result<(), Failure> {
    match c {
        McastCmd::Listen(l) => listen(&McastArgs {
            source: l.source,
            verify: l.verify,
            ..McastArgs::new(l.common)
        }),
        McastCmd::Send(s) => send(&McastArgs::sending(s)),
        McastCmd::Pong(p) => {
            let expect = pong_expect(&p)?;
            pong(
                &McastArgs {
                    source: p.source,
                    guard: Some(p.guard),
                    metrics: p.metrics,
                    ..McastArgs::new(p.common)
                },
                expect,
            )
        }
        McastCmd::Ping(p) => {
            let a = McastArgs::sending(p.send);
            // The rate and the group first: the round rules divide by it.
            Group::new(&a)?;
            let payload = ping_payload(
                &a,
                p.payload.as_deref(),
                p.payload_file
                    .as_deref()
                    .map(|f| (f, p.payload_format == "raw")),
                p.expect.as_deref(),
                p.timeout,
            )?;
            ping(&a, payload)
        }
    }
}

fn listen(a: &McastArgs) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let table: PeerTable = Arc::default();
    let (t2, verify) = (table.clone(), a.verify);
    let engine = start(&g, "listen", g.config(a, true), move |_| {
        McastListen::new(verify, t2.clone())
    })?;
    finish(a, &g, "listen", engine, a.duration, &table, no_extra)
}

fn pong(a: &McastArgs, expect: Option<Expect>) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let counts = Arc::new(PongCounts::default());
    let (c2, group) = (counts.clone(), g.addr.ip());
    let mut cfg = g.config(a, true);
    if let Some(guard) = &a.guard {
        cfg.guard = guard.guard();
        cfg.guard.broadcast_destinations = g.broadcast;
    }
    let what = if expect.is_some() {
        "not the expected bytes"
    } else {
        "not a ping"
    };
    let engine = start(&g, "pong", cfg, move |_| {
        McastPong::new(group, expect.clone(), c2.clone())
    })?;
    crate::metrics::start_metrics(a.metrics, &engine)?;
    use std::sync::atomic::Ordering::Relaxed;
    let c2 = counts.clone();
    let r = finish(
        a,
        &g,
        "pong",
        engine,
        a.duration,
        &PeerTable::default(),
        |s| {
            // What was not answered: refused by the engine's guard (by reason,
            // named as in `echo`), or by the pong itself.
            let guard: serde_json::Map<String, serde_json::Value> = s
                .counters()
                .filter(|(n, _)| n.starts_with("guard_"))
                .map(|(n, v)| (n.to_string(), v.into()))
                .collect();
            serde_json::json!({
                "guard": guard,
                "not_answered": {
                    "not_to_group": c2.not_to_group.load(Relaxed),
                    "not_a_ping": c2.not_a_ping.load(Relaxed),
                    "would_amplify": c2.would_amplify.load(Relaxed),
                },
            })
        },
    );
    note!(
        "udpring mcast pong: {} datagrams not answered: {} not sent to the group, {} {what}, \
         {} whose answer would be longer (--amplify)",
        counts.ignored(),
        counts.not_to_group.load(Relaxed),
        counts.not_a_ping.load(Relaxed),
        counts.would_amplify.load(Relaxed)
    );
    r
}

fn send(a: &McastArgs) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let (to, rate, size, count) = (g.addr, a.rate, a.size, a.count);
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let p2 = progress.clone();
    let engine = start(&g, "send", g.config(a, false), move |_| {
        let mut s = McastSend::new(to, rate, size, count);
        s.progress = p2.clone();
        s
    })?;
    // A counted send ends by itself when its last datagram is due.
    let natural =
        count.map(|c| Duration::from_secs_f64(c as f64 / rate) + Duration::from_millis(100));
    // Of a counted send, what was never handed over: the link (or this
    // host) did not keep the rate.
    let unsent = move || {
        count.map(|c| c.saturating_sub(progress.load(std::sync::atomic::Ordering::Relaxed)))
    };
    let u2 = unsent.clone();
    let r = finish(
        a,
        &g,
        "send",
        engine,
        a.duration.or(natural),
        &PeerTable::default(),
        move |_| match u2() {
            Some(n) => serde_json::json!({ "unsent": n }),
            None => serde_json::Value::Null,
        },
    );
    if let (Some(n), Some(c)) = (unsent(), count)
        && n > 0
        && !a.out.json_out()
    {
        say!(
            "{n} of the {c} datagrams asked were not sent: the link (or this host) did not keep \
             --rate {rate} (a full send buffer holds the sender back)"
        );
    }
    r
}

fn ping(a: &McastArgs, payload: PingPayload) -> Result<(), Failure> {
    let g = Group::new(a)?;
    let table: PeerTable = Arc::default();
    let (t2, to, rate) = (table.clone(), g.addr, a.rate);
    let count = a.count.unwrap_or(10);
    let engine = start(&g, "ping", g.config(a, false), move |_| {
        McastPing::new(to, rate, payload.clone(), count, t2.clone())
    })?;
    // Ends after the last ping and a drain for its replies.
    let natural = Duration::from_secs_f64(count as f64 / rate) + Duration::from_millis(500);
    finish(
        a,
        &g,
        "ping",
        engine,
        Some(a.duration.unwrap_or(natural)),
        &table,
        no_extra,
    )
}

fn start<H: udpring::Handler>(
    g: &Group,
    kind: &str,
    mut cfg: Config,
    factory: impl Fn(usize) -> H + Send + Sync + 'static,
) -> Result<Engine, Failure> {
    crate::serve::stop_on_failure(&mut cfg);
    udpring::signals::install().map_err(runtime)?;
    let engine = Engine::start(cfg, factory).map_err(runtime)?;
    note!(
        "udpring mcast {kind}: {} (local {}, backend {})",
        g.addr,
        engine.local_addr(),
        engine.backend()
    );
    Ok(engine)
}

/// Nothing beyond the per-peer table.
fn no_extra(_: &udpring::Stats) -> serde_json::Value {
    serde_json::Value::Null
}

/// Runs until `end` (or a signal), stops, and prints the per-peer table
/// (and in JSON, what `extra` adds from the engine's counters).
fn finish(
    a: &McastArgs,
    g: &Group,
    kind: &str,
    engine: Engine,
    end: Option<Duration>,
    table: &PeerTable,
    extra: impl FnOnce(&udpring::Stats) -> serde_json::Value,
) -> Result<(), Failure> {
    let json = a.out.json_out();
    let command = format!("mcast {kind}");
    let peers_heard = || table.lock().map_or(0, |r| r.peers.len());
    let (mut prev, mut last_t) = (udpring::Stats::default(), 0.0);
    let secs = run_until(end, a.out.every(), |t, dt| {
        let now = engine.stats();
        let tick = Tick {
            kind,
            t,
            dt,
            now: &now,
            prev: &prev,
            peers: peers_heard(),
        };
        if !a.out.quiet {
            if json {
                note!("{}", tick.line());
            } else {
                say!("{}", tick.line());
            }
        }
        if a.out.json_stream {
            tick.say_event(&command);
        }
        (prev, last_t) = (now, t);
    });
    let (stats, failure) = crate::serve::stop(engine);
    if a.out.json_stream {
        // The tail since the last interval: the intervals add up to the totals.
        Tick {
            kind,
            t: secs,
            dt: secs - last_t,
            now: &stats,
            prev: &prev,
            peers: peers_heard(),
        }
        .say_event(&command);
    }
    let extra = extra(&stats);
    let report = table.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let peers: Vec<(SocketAddr, PeerCounts)> = report.peers;
    let failed_sends = stats.send_errors_total();
    let failure = failure.or_else(|| purpose_failed(kind, g, &stats, &peers));
    if json {
        // Per peer: its address and its counts, side by side (the shape of
        // `load`'s responders). Responders answer a ping; sources are heard.
        let list: Vec<serde_json::Value> = peers
            .iter()
            .map(|(p, c)| {
                let mut v = serde_json::to_value(c).unwrap_or_default();
                if let Some(m) = v.as_object_mut() {
                    m.insert("addr".into(), p.to_string().into());
                }
                v
            })
            .collect();
        let mut v = serde_json::json!({"group": g.addr.to_string(), "sent": stats.sent});
        if kind != "send" {
            // A sender hears nothing: no receive counts, no peers.
            v["received"] = stats.received.into();
            v["untracked"] = report.untracked.into();
            v["invalid"] = report.invalid.into();
        }
        if kind == "ping" {
            v["late"] = report.late.into();
        }
        if kind != "listen" {
            // What never left: given up on a full send buffer, cancelled
            // at the stop (the rest of what was asked is `sent` or
            // `send_errors`).
            v["send_blocked"] = stats.send_blocked.into();
            v["cancelled"] = stats.cancelled.into();
        }
        if kind == "send" || kind == "ping" || failed_sends > 0 {
            v["send_errors"] = stats
                .send_errors
                .iter()
                .map(|&(e, n)| (udpring::errno_name(e), serde_json::Value::from(n)))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        if let (Some(m), serde_json::Value::Object(x)) = (v.as_object_mut(), extra) {
            m.extend(x);
        }
        // A pong answers without keeping a table: no list to give.
        match kind {
            "ping" => v["responders"] = list.into(),
            "listen" => v["sources"] = list.into(),
            _ => {}
        }
        a.out.say_end(&command, secs, v);
        return failure.map_or(Ok(()), Err);
    }
    let late = if kind == "ping" {
        format!("  late {}", report.late)
    } else {
        String::new()
    };
    let mut errors = if failed_sends > 0 {
        format!(" (failed {})", stats.send_errors_text())
    } else {
        String::new()
    };
    if stats.send_blocked + stats.cancelled > 0 {
        errors += &format!(
            " (not sent: {} given up on a full send buffer, {} cancelled at the stop)",
            stats.send_blocked, stats.cancelled
        );
    }
    // A sender hears nothing: no receive counts (as in its JSON).
    let heard = if kind == "send" {
        String::new()
    } else {
        format!(
            " received {}  not ours {}{late}  from sources beyond the {} tracked {}",
            stats.received,
            report.invalid,
            crate::apps::mcast::MAX_PEERS,
            report.untracked
        )
    };
    say!("{kind} {}: sent {}{errors}{heard}", g.addr, stats.sent);
    for (p, c) in peers {
        let rtt = c.rtt_us.as_ref().map_or(String::new(), |r| {
            format!(
                "  rtt p50 {:.1} p99 {:.1} max {:.1} us",
                r.p50, r.p99, r.max
            )
        });
        say!(
            "  {p}: received {} lost {} duplicated {} reordered {}{rtt}",
            c.received,
            c.lost,
            c.duplicated,
            c.reordered
        );
    }
    failure.map_or(Ok(()), Err)
}

/// Whether the run failed its purpose (exit 1, after the report): a send
/// or ping that nothing went out of, every send refused (e.g. ENETUNREACH:
/// no route for the group on that interface; a pong's sends are its
/// unicast answers, counted on its summary line), or a ping no responder
/// answered, as `ping` and `load` fail.
fn purpose_failed(
    kind: &str,
    g: &Group,
    stats: &udpring::Stats,
    peers: &[(SocketAddr, PeerCounts)],
) -> Option<Failure> {
    let msg = if matches!(kind, "send" | "ping") && stats.sent == 0 && stats.send_errors_total() > 0
    {
        let most = stats.send_errors.iter().max_by_key(|&&(_, n)| n);
        let why = match most.map(|&(e, _)| e) {
            Some(libc::ENETUNREACH) if g.broadcast => "; no route for it (the limited \
                 broadcast leaves by the default route's interface, and there is none): choose \
                 one with --iface"
                .to_string(),
            Some(libc::ENETUNREACH) => "; no route for the group there (an interface without \
                 the MULTICAST flag, such as lo, has none for IPv6): choose another --iface"
                .to_string(),
            Some(e) => udpring::os::why_unsendable(g.addr, e)
                .map(|why| format!(": {why}"))
                .unwrap_or_default(),
            None => String::new(),
        };
        format!(
            "nothing went out to {}: every send failed ({}){why}",
            g.addr,
            stats.send_errors_text(),
        )
    } else if kind == "ping" && stats.sent > 0 && peers.iter().all(|(_, c)| c.received == 0) {
        format!(
            "no responder answered {} pings to {} ({})",
            stats.sent,
            g.addr,
            if g.broadcast {
                "is `udpring mcast pong` listening on that broadcast address, on the link?"
            } else {
                "is `udpring mcast pong` joined there, and the TTL enough?"
            }
        )
    } else {
        return None;
    };
    Some(Failure { code: 1, msg })
}

/// What the peers a subcommand tracks are called: the sources a listener
/// hears, the responders a ping hears (a sender hears none, a pong answers
/// without keeping a table).
fn peers_word(kind: &str) -> Option<&'static str> {
    match kind {
        "listen" => Some("sources"),
        "ping" => Some("responders"),
        _ => None,
    }
}

/// One interval of a run: `t` seconds since the start, `dt` long, the
/// engine's counters at its end and start, and the peers heard so far.
struct Tick<'a> {
    kind: &'a str,
    t: f64,
    dt: f64,
    now: &'a udpring::Stats,
    prev: &'a udpring::Stats,
    peers: usize,
}

impl Tick<'_> {
    /// The live line: the rates over the interval and the peers heard.
    fn line(&self) -> String {
        let (t, peers) = (self.t, self.peers);
        let dt = self.dt.max(1e-3);
        let tx = self.now.sent.saturating_sub(self.prev.sent) as f64 / dt;
        let rx = self.now.received.saturating_sub(self.prev.received) as f64 / dt;
        match self.kind {
            "send" => format!("t={t:>6.1}s tx {tx:>10.0}/s"),
            "listen" => format!("t={t:>6.1}s rx {rx:>10.0}/s  sources {peers}"),
            "ping" => format!("t={t:>6.1}s tx {tx:>10.0}/s rx {rx:>10.0}/s  responders {peers}"),
            _ => format!("t={t:>6.1}s rx {rx:>10.0}/s tx {tx:>10.0}/s"),
        }
    }

    /// Prints the `--json-stream` interval event, with the peers heard so
    /// far (`sources_heard`, `responders_heard`).
    fn say_event(&self, command: &str) {
        let mut v = crate::serve::interval_event(self.t, self.dt, self.now, self.prev);
        if let Some(w) = peers_word(self.kind) {
            v[format!("{w}_heard")] = self.peers.into();
        }
        crate::common::say_json(command, None, v);
    }
}
