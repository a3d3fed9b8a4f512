//! Many generators as one load: `--shard I/N` takes generator I's share,
//! `--start-at TIME` starts them together.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::apps::load::{LoadOpts, LoadReport, Mode};

use crate::common::{Failure, usage};

/// Most generators in one fleet.
const MAX_SHARDS: usize = 10_000;

/// `I/N`, 0 <= I < N.
pub(crate) fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("'{s}' is not I/N (generator I of N, counted from 0: 0/3, 1/3, 2/3)");
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if n == 0 || n > MAX_SHARDS || i >= n {
        return Err(format!(
            "--shard {s}: I must be 0..N-1 and N 1..{MAX_SHARDS}"
        ));
    }
    Ok((i, n))
}

/// How late a generator may start after `--start-at` and still run (it
/// says how late, and its result carries it).
const MAX_LATE: Duration = Duration::from_secs(60);

/// Unix seconds (`1795400000.5`) or RFC 3339 (`2026-11-23T10:00:00Z`,
/// `2026-11-23T11:00:00.250+01:00`).
pub(crate) fn parse_time(s: &str) -> Result<SystemTime, String> {
    if s.starts_with('+') {
        // Read as Unix seconds, `+10` would be 1970; and "10 s from now"
        // on each host is as many instants as hosts.
        return Err(format!(
            "'{s}': one instant for every generator, not a delay: RFC 3339 or Unix seconds, \
             e.g. $(date -d '+10 sec' +%s)"
        ));
    }
    if let Ok(secs) = s.parse::<f64>() {
        if !(secs.is_finite() && (0.0..1e11).contains(&secs)) {
            return Err(format!("'{s}' is not a time"));
        }
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    rfc3339(s).ok_or_else(|| {
        format!("'{s}' is not a time: RFC 3339 (2026-11-23T10:00:00Z) or Unix seconds")
    })
}

/// `unix_s` as a UTC date and time, `2026-12-05 07:41:00 UTC` (Howard
/// Hinnant's civil-from-days).
pub(crate) fn utc_text(unix_s: f64) -> String {
    let secs = unix_s.floor() as i64;
    let (days, tod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    )
}

fn rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse().ok() };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut frac = 0.0;
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        frac = format!("0.{}", &r[..digits]).parse().ok()?;
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = (
                rest.get(1..3)?.parse::<i64>().ok()?,
                rest.get(4..6)?.parse::<i64>().ok()?,
            );
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_secs_f64(frac))
}

/// Generator `i` of `n`'s share of `o`: of the rate, bursts, count,
/// payloads, and (with a fixed `--bind` port) of the source ports.
pub(crate) fn shard(o: &mut LoadOpts, i: usize, n: usize) -> Result<(), Failure> {
    let nf = n as f64;
    if let Mode::Rate(r) = o.mode {
        o.mode = Mode::Rate(r / nf);
    }
    if let Some((b, t)) = o.bursts {
        let share = b / n as u64 + u64::from((i as u64) < b % n as u64);
        if share < 2 {
            return Err(usage(format!(
                "--burst {b} over {n} generators leaves under 2 each"
            )));
        }
        o.bursts = Some((share, t));
        o.mode = Mode::Rate(share as f64 / t.as_secs_f64());
    }
    if let Some(c) = o.count {
        let share = c / n as u64 + u64::from((i as u64) < c % n as u64);
        if share == 0 {
            return Err(usage(format!(
                "--count {c} over {n} generators leaves none for {i}"
            )));
        }
        o.count = Some(share);
    }
    if let Some(b) = o.bind
        && b.port() != 0
    {
        // Its own slice of the source ports: flows x generators ports
        // from the one given.
        let first = usize::from(b.port()) + i * o.flows;
        let port = u16::try_from(first)
            .ok()
            .filter(|_| first + o.flows <= 65536)
            .ok_or_else(|| {
                usage(format!(
                    "--bind {b}: generator {i}'s {} ports start at {first}, past 65535",
                    o.flows
                ))
            })?;
        o.bind = Some(std::net::SocketAddr::new(b.ip(), port));
    }
    if let Some(p) = &o.payloads {
        let mine = p.shard(i, n).ok_or_else(|| {
            usage(format!(
                "{} payloads leave none for generator {i} of {n}",
                p.len()
            ))
        })?;
        o.payloads = Some(std::sync::Arc::new(mine));
    }
    Ok(())
}

/// Sleeps until `warmup` before `t` (measuring then begins at `t`); a
/// signal ends the wait. Late already: returns at once (and the result
/// says how late).
pub(crate) fn wait_until(t: SystemTime, warmup: Duration) -> Result<(), Failure> {
    if let Ok(ago) = SystemTime::now().duration_since(t)
        && ago > MAX_LATE
    {
        return Err(usage(format!(
            "--start-at was {:.0} s ago (more than a minute): a generator that late would \
             measure another interval than the others (a clock off, or a time mistyped?)",
            ago.as_secs_f64()
        )));
    }
    let go = t.checked_sub(warmup).unwrap_or(t);
    if let Ok(d) = go.duration_since(SystemTime::now())
        && d > Duration::from_secs(7 * 86_400)
    {
        return Err(usage("--start-at is more than a week away"));
    }
    loop {
        if crate::common::stop_requested() {
            return Err(Failure {
                code: 1,
                msg: "stopped while waiting for --start-at".into(),
            });
        }
        match go.duration_since(SystemTime::now()) {
            Ok(d) if d > Duration::ZERO => std::thread::sleep(d.min(Duration::from_millis(50))),
            _ => return Ok(()),
        }
    }
}

/// Records when measuring began (`began`) against `asked`, and says so
/// when it was late by more than 10 ms.
pub(crate) fn mark_start(r: &mut LoadReport, asked: SystemTime, began: SystemTime) {
    let unix = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    r.start_unix_s = Some(unix(began));
    let late = unix(began) - unix(asked);
    r.start_late_s = Some(late.max(0.0));
    if late > 0.010 {
        r.warnings.push(format!(
            "warning: started {:.1} ms after --start-at (its result says when: start_unix_s)",
            late * 1e3
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_text_reads_back_as_the_same_instant() {
        for s in [
            "2026-12-05T07:41:00Z",
            "2000-02-29T23:59:59Z",
            "1970-01-01T00:00:00Z",
        ] {
            let t = rfc3339(s).unwrap();
            let u = t
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            assert_eq!(utc_text(u), s.replace('T', " ").replace('Z', " UTC"));
        }
    }

    #[test]
    fn times_and_shards_parse() {
        let t = |s: &str| {
            parse_time(s)
                .unwrap()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        assert_eq!(t("1970-01-01T00:00:00Z"), 0.0);
        assert_eq!(t("2000-03-01T00:00:00Z"), 951_868_800.0);
        assert_eq!(t("2026-11-23T10:00:00.250+01:00"), 1_795_424_400.25);
        assert_eq!(t("1795395600.5"), 1_795_395_600.5);
        for bad in [
            "2026-13-01T00:00:00Z",
            "2026-11-23",
            "tomorrow",
            "2026-11-23T10:00:00+1",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        // A delay is not an instant (as Unix seconds, 1970).
        assert!(parse_time("+10").unwrap_err().contains("not a delay"));
        assert_eq!(parse_shard("2/3"), Ok((2, 3)));
        for bad in ["3/3", "0/0", "1", "a/b"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
