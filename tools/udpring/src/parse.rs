//! The argument parsers every command shares: addresses (with the hints
//! for a missing bracket or scope), seconds, rates and bitrates, sizes,
//! worker and batch counts, interfaces and CPUs that must exist here.

use std::net::SocketAddr;
use std::time::Duration;

use udpring::Backend;

pub(crate) fn parse_backend(s: &str) -> Result<Backend, String> {
    s.parse()
}

/// `ADDR:PORT`, `[ADDR]:PORT`, a scoped IPv6 address
/// `[fe80::1%eth0]:PORT` (the interface by name or index), or a name the
/// system resolves (`localhost:9000`), its first address.
pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Some(a) = scoped_v6(s)? {
        return Ok(a);
    }
    let a = match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            if let Some(hint) = bracket_hint(s) {
                return Err(hint);
            }
            // A name with a port; anything else, or a name nothing
            // resolves, is said as not an address.
            resolve_any(s).map_err(|_| {
                format!(
                    "'{s}' is not an address with a port (expected e.g. 127.0.0.1:9000 or \
                     [::1]:9000)"
                )
            })?
        }
    };
    scope_needed(s, a)
}

/// Resolves HOST:PORT (a name, an IPv4 address, or [IPv6]:PORT). The
/// unspecified address is this host's loopback, as the kernel takes it for
/// a destination (`0.0.0.0:9000` copied from a server's `--bind`): named
/// so, replies from it match the target.
pub(crate) fn resolve_target(target: &str) -> Result<SocketAddr, String> {
    resolve_any(target).map(|mut a| {
        if a.ip().is_unspecified() {
            a.set_ip(match a {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        a
    })
}

fn resolve_any(target: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Some(a) = scoped_v6(target)? {
        return Ok(a);
    }
    if let Ok(a) = target.parse::<SocketAddr>() {
        return scope_needed(target, a);
    }
    if let Some(hint) = bracket_hint(target) {
        return Err(format!("target {hint}"));
    }
    let (host, port) = target
        .rsplit_once(':')
        .ok_or_else(|| format!("target '{target}' needs a port (HOST:PORT)"))?;
    let _: u16 = port
        .parse()
        .map_err(|_| format!("target '{target}': '{port}' is not a port"))?;
    if host.is_empty() {
        return Err(format!("target '{target}' has no host"));
    }
    let mut addrs = target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve '{host}': {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("'{host}' resolves to no address"))
}

/// What is wrong with an IPv6 address written without its brackets, or
/// with a port not after `]:`; `None` when neither is the trouble.
pub(crate) fn bracket_hint(s: &str) -> Option<String> {
    if let Some(rest) = s.strip_prefix('[') {
        let close = rest.find(']')?;
        let after = &rest[close + 1..];
        if !after.starts_with(':') {
            return Some(format!(
                "'{s}': after ']' comes ':PORT' (e.g. [{}]:9000)",
                &rest[..close]
            ));
        }
        return None;
    }
    (s.matches(':').count() > 1).then(|| {
        format!("'{s}': an IPv6 address goes in brackets before its port, e.g. [::1]:9000")
    })
}

/// Refuses an IPv6 link-local address without its interface: the kernel
/// cannot tell which link is meant (EINVAL at connect, or every send
/// failing while the server looks down).
pub(crate) fn scope_needed(s: &str, a: SocketAddr) -> Result<SocketAddr, String> {
    match a {
        SocketAddr::V6(v6) if v6.ip().is_unicast_link_local() && v6.scope_id() == 0 => {
            Err(format!(
                "'{s}' is link-local: say its interface, e.g. [{}%eth0]:{} (`ip -6 addr` \
                 shows which link has it)",
                v6.ip(),
                v6.port()
            ))
        }
        _ => Ok(a),
    }
}

/// `[ADDR%IFACE]:PORT` with IFACE a name or an index; `None` without a
/// `%` scope.
pub(crate) fn scoped_v6(s: &str) -> Result<Option<SocketAddr>, String> {
    let (Some(pct), Some(close)) = (s.find('%'), s.rfind(']')) else {
        return Ok(None);
    };
    if !s.starts_with('[') || pct > close {
        return Ok(None);
    }
    let iface = &s[pct + 1..close];
    let plain = format!("{}{}", &s[..pct], &s[close..]);
    let mut a: SocketAddr = plain
        .parse()
        .map_err(|_| format!("'{s}' is not [IPV6%IFACE]:PORT"))?;
    let index = match iface.parse::<u32>() {
        Ok(i) => i,
        Err(_) => udpring::interface_index(iface).map_err(|e| e.to_string())?,
    };
    if let SocketAddr::V6(v6) = &mut a {
        if !takes_scope(v6.ip()) {
            // The kernel ignores the scope of such an address (it neither
            // sends over that link nor reports it on the replies, which then
            // match no target).
            return Err(format!(
                "'{s}': a scope (%{iface}) is for link-local addresses (fe80::/10) and \
                 multicast groups; {} takes none: drop it, or send over one \
                 interface with --bind-device",
                v6.ip()
            ));
        }
        v6.set_scope_id(index);
    }
    Ok(Some(a))
}

/// Whether a scope (an interface) means something for this address:
/// link-local unicast, which the kernel cannot route without it, and
/// multicast, where it names the interface the group is sent on.
fn takes_scope(ip: &std::net::Ipv6Addr) -> bool {
    ip.is_unicast_link_local() || ip.is_multicast()
}

/// Seconds, bare or with a unit: `5`, `5s`, `500ms`, `250us`, `2m`, `1h`.
pub(crate) fn parse_secs(s: &str) -> Result<Duration, String> {
    let v = secs_value(s)?;
    if !(v.is_finite() && v > 0.0 && v <= 86400.0 * 365.0) {
        return Err(format!("'{s}': seconds must be > 0 and at most a year"));
    }
    let d = Duration::from_secs_f64(v);
    if d.is_zero() {
        // 1e-300 is > 0, and no time at all.
        return Err(format!("'{s}': below a nanosecond"));
    }
    Ok(d)
}

/// [`parse_secs`], or zero (`0`, `0.0`, `0ms`).
pub(crate) fn parse_secs_or_zero(s: &str) -> Result<Duration, String> {
    if secs_value(s)? == 0.0 {
        return Ok(Duration::ZERO);
    }
    parse_secs(s)
}

/// The seconds `s` says, with its unit (ms, us, µs, s, m, h) applied.
fn secs_value(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (num, scale) = [
        ("ms", 1e-3),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ]
    .iter()
    .find_map(|&(u, k)| t.strip_suffix(u).map(|n| (n, k)))
    .unwrap_or((t, 1.0));
    num.parse::<f64>()
        .map(|v| v * scale)
        .map_err(|_| format!("'{s}' is not a duration (5, 5s, 500ms, 2m)"))
}

/// A number with an optional SI suffix, as iperf3 takes them: `10k` is
/// 10000, `2.5M` 2500000, `1G` 10^9 (k, M, G; either case).
pub(crate) fn parse_si(s: &str) -> Option<f64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last()? {
        'k' | 'K' => (&t[..t.len() - 1], 1e3),
        'm' | 'M' => (&t[..t.len() - 1], 1e6),
        'g' | 'G' => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// Datagrams per second: `100000`, `100k`, `1.5M`.
pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    let v = parse_si(s).ok_or_else(|| {
        format!("'{s}' is not a rate in datagrams per second (e.g. 20000, 20k, 1.5M)")
    })?;
    if !(v.is_finite() && (1.0..=100e6).contains(&v)) {
        return Err(format!("rate {s} must be 1..100M datagrams/s"));
    }
    Ok(v)
}

/// Payload bits per second: `100M`, `1G`, `500k`.
pub(crate) fn parse_bitrate(s: &str) -> Result<f64, String> {
    let v = parse_si(s).ok_or_else(|| {
        format!("'{s}' is not a bitrate in bits per second (e.g. 100M, 1G, 500k)")
    })?;
    if !(v.is_finite() && (1e3..=1e12).contains(&v)) {
        return Err(format!("bitrate {s} must be 1k..1000G bits/s"));
    }
    Ok(v)
}

/// 0 (one per CPU) up to the CPUs this process may use: more workers than
/// CPUs only share them, each with its own buffers.
pub(crate) fn parse_workers(s: &str) -> Result<usize, String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    match s.parse::<usize>() {
        Ok(v) if v <= cpus => Ok(v),
        _ => Err(format!(
            "--workers {s} must be 0..{cpus} (0: one per CPU; this process may use {cpus} CPU{})",
            if cpus == 1 { "" } else { "s" }
        )),
    }
}

pub(crate) fn parse_batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(v) if (1..=1024).contains(&v) => Ok(v),
        _ => Err(format!("--batch must be 1..1024, not {s}")),
    }
}

/// A payload size for the load generator's datagrams: at least its header
/// (32 bytes), at most what one IPv4 datagram carries.
pub(crate) fn parse_size(s: &str) -> Result<usize, String> {
    let v: usize = s
        .parse()
        .map_err(|_| format!("'{s}' is not a size in bytes"))?;
    let min = crate::apps::header::HEADER_LEN;
    if !(min..=udpring::MAX_UDP_PAYLOAD).contains(&v) {
        return Err(format!(
            "size {v} must be {min}..{} (the load generator's header takes {min} bytes)",
            udpring::MAX_UDP_PAYLOAD
        ));
    }
    Ok(v)
}

/// An interface name that names an interface of this host (network
/// namespace), so that a misspelt one is an error, not a flag that does
/// nothing.
pub(crate) fn parse_iface(s: &str) -> Result<String, String> {
    udpring::interface_index(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// A CPU index among those this process may use (`--cpu`), not one that
/// would wrap around to another.
pub(crate) fn parse_cpu(s: &str) -> Result<usize, String> {
    let n = udpring::os::allowed_cpus().len().max(1);
    match s.parse::<usize>() {
        Ok(i) if i < n => Ok(i),
        _ => Err(format!(
            "'{s}' is not a CPU index: this process may use {n} CPU{} (0..{})",
            if n == 1 { "" } else { "s" },
            n - 1
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_positive_or_an_explicit_zero() {
        assert_eq!(parse_secs("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_secs("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1", "inf", "NaN", "2y", "366d"] {
            assert!(parse_secs(bad).is_err(), "{bad}");
        }
        // Above zero, yet no time at all once a Duration.
        assert_eq!(
            parse_secs("1e-300"),
            Err("'1e-300': below a nanosecond".into())
        );
        // Zero, however it is written, where zero is allowed.
        for zero in ["0", "0.0", "0ms", "0s"] {
            assert_eq!(parse_secs_or_zero(zero), Ok(Duration::ZERO), "{zero}");
        }
        assert!(parse_secs_or_zero("1e-300").is_err());
    }

    #[test]
    fn a_scope_is_taken_where_it_means_something() {
        let idx = |s: &str| match parse_addr(s) {
            Ok(SocketAddr::V6(v6)) => Ok(v6.scope_id()),
            Ok(v4) => panic!("{v4}"),
            Err(e) => Err(e),
        };
        assert_eq!(idx("[fe80::1%7]:9"), Ok(7));
        assert_eq!(idx("[ff12::1%1]:9"), Ok(1));
        assert_eq!(idx("[ff0e::1%3]:9"), Ok(3));
        // Replies from ::1 carry no scope: with one, none would match.
        for bad in ["[::1%1]:9", "[2001:db8::1%2]:9", "[::ffff:127.0.0.1%1]:9"] {
            let e = idx(bad).unwrap_err();
            assert!(
                e.contains("takes none") && e.contains("--bind-device"),
                "{bad}: {e}"
            );
        }
        assert!(idx("[fe80::1]:9").unwrap_err().contains("link-local"));
    }

    #[test]
    fn a_name_with_a_port_is_an_address() {
        // 127.0.0.1 or ::1, as the system's resolver orders them.
        let a = parse_addr("localhost:9000").unwrap();
        assert!(a.ip().is_loopback() && a.port() == 9000, "{a}");
        for bad in [
            "127.0.0.1",
            "300.0.0.1:5",
            "no-such-host.invalid:9",
            "localhost:x",
        ] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains("is not an address with a port"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_target_at_the_unspecified_address_is_this_hosts_loopback() {
        let t = |s: &str| resolve_target(s).map(|a| a.to_string());
        assert_eq!(t("0.0.0.0:9"), Ok("127.0.0.1:9".into()));
        assert_eq!(t("[::]:9"), Ok("[::1]:9".into()));
        assert_eq!(t("127.0.0.2:9"), Ok("127.0.0.2:9".into()));
        assert_eq!(t("[::1]:9"), Ok("[::1]:9".into()));
    }
}
