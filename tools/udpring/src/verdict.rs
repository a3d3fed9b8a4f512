//! After a `load` run: whether it measured what it was for (exit 1 when
//! not, or when a threshold was missed), and what to try after a loss.

use crate::common::Failure;

/// After a run: a warning when a paced run fell behind, a hint when it
/// lost datagrams (each line prefixed `warning: ` or `hint: `). The caller
/// says them on standard error (unless `-q`) and puts them in the result.
pub(crate) fn advice(
    report: &crate::apps::load::LoadReport,
    o: &crate::apps::load::LoadOpts,
) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rate) = report.rate
        && report.saturated
    {
        let late = match report.counts.unsent {
            0 => format!(
                "the schedule ran {:.2} s late",
                report.duration_s - o.duration.map_or(report.duration_s, |d| d.as_secs_f64())
            ),
            n => format!(
                "{n} datagrams due before the end were never sent: a paced run stops \
                 sending {} s past its end",
                crate::apps::load::LATE_LIMIT.as_secs()
            ),
        };
        out.push(format!(
            "warning: asked for {rate:.0}/s but this host sent {:.0}/s ({late}); latencies \
             include the lateness of what was sent. More --workers or --gso send faster",
            report.pps_sent,
        ));
    }
    if let Some(h) = limiting_hint(report) {
        out.push(format!("hint: {h}"));
    } else if let Some(h) = loss_hint(report, o) {
        out.push(format!("hint: {h}"));
    }
    let (bad, answers) = (report.counts.unexpected, report.counts.received);
    if bad > 0 && bad < answers {
        out.push(format!(
            "warning: {bad} of {answers} answers ({:.2}%) did not carry --expect {}{}; they \
             count as received, with their RTTs: an error answered fast reads as a fast \
             service",
            100.0 * bad as f64 / answers as f64,
            report.checks(),
            sample(&report.counts)
        ));
    }
    let early = report.counts.ids_reused_early;
    if early > 0 {
        out.push(format!(
            "warning: {early} requests were written off before --timeout {:?} because their \
             ID was needed again to keep the schedule (a reply to one after that counts as \
             unmatched); more --flows, a longer ID or a lower --rate keep more in flight",
            o.timeout()
        ));
    }
    out
}

/// The first unexpected answer's first bytes, as a clause.
fn sample(c: &crate::apps::load::Counts) -> String {
    match &c.unexpected_sample {
        Some(b) => format!(" (the first began {})", crate::apps::load::expect::shown(b)),
        None => String::new(),
    }
}

/// A DNS server that limits its answers: many truncated (TC: RRL's
/// "slip", or a server asking for TCP) or REFUSED. What is lost then is
/// the server's policy, not its capacity; said instead of the loss hint.
fn limiting_hint(r: &crate::apps::load::LoadReport) -> Option<String> {
    let c = &r.counts;
    let answers = c.received.max(1);
    let refused = c.dns_rcodes.get("REFUSED").copied().unwrap_or(0);
    let many = |n: u64| n * 10 >= answers && n >= 10;
    let mut why = Vec::new();
    if many(c.dns_truncated) {
        why.push(format!(
            "{} of {} answers had TC set (truncated: response-rate limiting's \
             \"slip\", or a server asking for TCP)",
            c.dns_truncated, c.received
        ));
    }
    if many(refused) {
        why.push(format!(
            "{refused} of {} answers were REFUSED (an ACL, or a zone it does not serve)",
            c.received
        ));
    }
    if why.is_empty() {
        return None;
    }
    let lost = if r.lost > 0 {
        format!(
            "; with {} lost, the server is limiting its answers (e.g. response-rate \
             limiting drops most and slips some), not out of capacity: a lower --rate, \
             more source addresses, or RRL off measures its capacity",
            r.lost
        )
    } else {
        String::new()
    };
    Some(format!("{}{lost}", why.join("; ")))
}

/// After a run: exit 1 when it measured nothing or missed a threshold.
pub(crate) fn judge(
    report: &crate::apps::load::LoadReport,
    o: &crate::apps::load::LoadOpts,
    limits: &crate::limits::Limits,
) -> Result<(), Failure> {
    let target = o.target;
    if let (false, Some(why)) = (report.valid, &report.invalid_because) {
        return Err(Failure {
            code: 1,
            msg: why.clone(),
        });
    }
    let refused: u64 = report.send_errors.values().sum();
    if refused > 0 && report.kernel.sent_bufs == 0 {
        // Handed to the kernel, and every one refused: nothing went out,
        // whatever `sent` (datagrams handed over) says.
        let errs: Vec<String> = report
            .send_errors
            .iter()
            .map(|(e, n)| format!("{e}={n}"))
            .collect();
        // The most frequent errno, said in words where its name misleads.
        let most = report.send_errors.iter().max_by_key(|&(_, n)| *n);
        let route = match most.map(|(e, _)| e.as_str()) {
            Some("ENETUNREACH") => {
                " (no route to it from here, or none on the interface a group is sent on)".into()
            }
            Some(name) => errno_by_name(name)
                .and_then(|n| udpring::os::why_unsendable(target, n))
                .map(|why| format!(": {why}"))
                .unwrap_or_default(),
            None => String::new(),
        };
        return Err(Failure {
            code: 1,
            msg: format!(
                "nothing went out to {target}: the kernel refused every send ({}){route}",
                errs.join(" ")
            ),
        });
    }
    if o.one_way() && report.counts.sent == 0 {
        let why = match (report.counts.unsent, report.rate, o.duration) {
            (0, Some(rate), Some(d)) => format!(
                ": at --rate {rate} one is due every {:.3} s, and none was in the {:.3} s \
                 measured (a longer --duration or a higher --rate)",
                1.0 / rate,
                d.as_secs_f64()
            ),
            (0, ..) => String::new(),
            (n, ..) => format!(
                ": {n} were due, and this host was still sending the warm-up's {} s past the \
                 end (a lower --rate, more --workers or --gso)",
                crate::apps::load::LATE_LIMIT.as_secs()
            ),
        };
        return Err(Failure {
            code: 1,
            msg: format!("nothing sent to {target} after the warm-up{why}"),
        });
    }
    if !o.one_way() && report.counts.received == 0 {
        // The measurement failed its purpose: exit 1.
        let c = &report.counts;
        let msg = if report.counts.sent > 0 && c.truncated > 0 {
            format!(
                "no whole reply from {target} to {} datagrams of {} B: {} came back cut (the \
                 server's buffer is smaller than the datagram: `udpring echo --slot-size {}`, \
                 or a smaller --size)",
                report.counts.sent,
                o.size,
                c.truncated,
                o.size + udpring::HEADROOM
            )
        } else if report.counts.sent > 0 && c.invalid + c.dns_not_response > 0 {
            format!(
                "no valid reply from {target} to {} datagrams: {} came back invalid{} (is it \
                 the service you meant?)",
                report.counts.sent,
                c.invalid,
                if c.dns_not_response > 0 {
                    format!(", {} of them not DNS responses", c.dns_not_response)
                } else {
                    String::new()
                }
            )
        } else if c.sent > 0 && c.foreign > 0 {
            format!(
                "no replies from {target} to {} datagrams, but {} datagrams came from other \
                 addresses (a service that answers from another port or address? only \
                 replies from {target} count)",
                c.sent, c.foreign
            )
        } else if let Some(n) = c.errors.get("ECONNREFUSED").filter(|_| c.sent > 0) {
            format!(
                "no replies from {target} to {} datagrams, and {n} ICMP port unreachable \
                 (ECONNREFUSED): nothing listens on that port",
                c.sent
            )
        } else if report.counts.sent > 0 {
            format!(
                "no replies from {target} to {} datagrams: is an echo server listening there? \
                 (to a sink that answers nothing, send with --match none)",
                report.counts.sent
            )
        } else if let Some(rate) = report.rate.filter(|_| report.counts.unsent > 0) {
            format!(
                "nothing measured: asked for {rate:.0}/s, this host had not sent one datagram \
                 of the measured span {} s past its end ({} were due): a lower --rate, more \
                 --workers or --gso",
                crate::apps::load::LATE_LIMIT.as_secs(),
                report.counts.unsent
            )
        } else if let (Some(rate), Some(d)) = (report.rate, o.duration) {
            format!(
                "nothing measured: --rate {rate} sends one datagram every {:.3} s, and \
                 none was due in the {:.3} s measured after the {:.3} s warm-up (a longer \
                 --duration or a higher --rate)",
                1.0 / rate,
                d.as_secs_f64(),
                o.warmup().as_secs_f64()
            )
        } else {
            format!(
                "nothing measured: no datagram to {target} was sent after the warm-up \
                 (a request was still waiting for its reply or its --timeout)"
            )
        };
        return Err(Failure { code: 1, msg });
    }
    let c = &report.counts;
    if c.unexpected > 0 && c.unexpected == c.received {
        return Err(Failure {
            code: 1,
            msg: format!(
                "none of the {} answers from {target} carried --expect {}{}: the figures \
                 are of some other answer (an error? another request?)",
                c.received,
                report.checks(),
                sample(c)
            ),
        });
    }
    match limits.violated(report) {
        Some(line) => Err(Failure {
            code: 1,
            msg: format!("threshold: {line}"),
        }),
        None => Ok(()),
    }
}

/// What to try after a run that lost datagrams, or `None`.
fn loss_hint(r: &crate::apps::load::LoadReport, o: &crate::apps::load::LoadOpts) -> Option<String> {
    use crate::apps::load::Mode;
    // Nothing back at all: the verdict's error says why (no server, cut
    // replies, invalid ones); a hint to pace below 0/s would mislead.
    if r.lost == 0 || r.counts.sent == 0 || r.counts.received == 0 {
        return None;
    }
    let pct = 100.0 * r.lost as f64 / r.counts.sent as f64;
    let buffer = if r.host_udp.rcvbuf_errors > 0 {
        format!(
            " (this host's kernel dropped {} at full socket buffers: RcvbufErrors)",
            r.host_udp.rcvbuf_errors
        )
    } else {
        String::new()
    };
    // Replies that came back but answer no request because the service
    // changed them: loss it made, not loss from falling behind, and "a
    // lower --rate" would send the user after the wrong thing. (A reply
    // to a request written off early is unmatched too, so `unmatched`
    // counts here only when none was.)
    let c = &r.counts;
    let unmatched = if c.ids_reused_early == 0 {
        c.unmatched
    } else {
        0
    };
    let altered = c
        .invalid
        .saturating_add(c.truncated)
        .saturating_add(unmatched);
    if altered >= 10 && altered.saturating_mul(10) >= r.lost {
        let parts: Vec<String> = [
            (c.invalid, "invalid"),
            (c.truncated, "cut short"),
            (unmatched, "with no request's ID"),
        ]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        let must = match o.matching {
            crate::apps::load::Match::Id { offset, len } => format!(
                "with --match id:{offset}:{len} it must copy each request's {len}-byte ID \
                 back at byte {offset}"
            ),
            _ => "with --match header it must echo each request whole; a service that \
                  answers with other bytes needs --match id:OFFSET:LEN or flow"
                .to_string(),
        };
        return Some(format!(
            "{pct:.3}% lost{buffer}, and {altered} replies came back that answer no request \
             ({}): the service changes what it sends back, so this is not its capacity \
             ({must})",
            parts.join(", ")
        ));
    }
    let what = match (&o.mode, o.window) {
        (Mode::Flood, None) => "a flood with no window overruns the server's socket buffer; \
             drop --unbounded (256 in flight) to measure the server instead"
            .to_string(),
        (Mode::Flood, Some(w)) => format!(
            "with {w} in flight per worker; a smaller --window, or a paced --rate \
             below {:.0}/s (what came back), shows where loss starts",
            r.pps_received
        ),
        (Mode::Rate(rate), _) => format!(
            "at {rate:.0}/s the server or the path does not keep up; \
             try a lower --rate"
        ),
        (Mode::Ping, _) => {
            let icmp: Vec<String> = c.errors.iter().map(|(e, n)| format!("{e}={n}")).collect();
            let icmp = if icmp.is_empty() {
                String::new()
            } else {
                format!(
                    ", and requests were answered by ICMP errors ({}): the service was not \
                     there, or not reachable, for part of the run",
                    icmp.join(" ")
                )
            };
            format!(
                "{} requests went unanswered within --timeout {:?}{icmp}",
                c.timeouts,
                o.timeout()
            )
        }
    };
    Some(format!("{pct:.3}% lost{buffer}: {what}"))
}

/// The errno a name from [`udpring::errno_name`] stands for (Linux's
/// run from EPERM, 1, to EHWPOISON, 133).
fn errno_by_name(name: &str) -> Option<i32> {
    (1..=133).find(|&e| udpring::errno_name(e) == name)
}
