//! `load`'s payload sources: a fixed hex payload, a file of payloads (hex
//! lines or length-prefixed records), or a dnsperf query file. Everything is
//! read, parsed and laid out once, before the run.

use super::dns;
use super::matcher::Payloads;
use clap::Args;

use crate::common::{Failure, usage};

#[derive(Args, Clone, Debug, Default)]
pub(crate) struct PayloadArgs {
    /// Send this payload (hex, e.g. 0001000000010000 for a memcached UDP
    /// frame header) instead of udpring's header; say how replies match
    /// with --match.
    #[arg(long, value_name = "HEX", conflicts_with_all = ["payload_file", "dns_queries"])]
    pub(crate) payload: Option<String>,
    /// Send the payloads of FILE in turn (per flow, cycled): one per line
    /// as hex (blank lines and # comments skipped), or with --payload-format
    /// raw, records of a u16 big-endian length and that many bytes. `-`:
    /// standard input.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dns_queries", "pcap"])]
    pub(crate) payload_file: Option<std::path::PathBuf>,
    /// Send the UDP payloads of a capture (pcap or pcapng; Ethernet, Linux
    /// cooked SLL/SLL2, raw IP; IPv4 and IPv6), in order, cycled. `-`:
    /// standard input (`tcpdump -r all.pcap -w - udp port 53 | udpring load
    /// ... --pcap -`; read to its end, so not a live capture).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dns_queries", "payload"])]
    pub(crate) pcap: Option<std::path::PathBuf>,
    /// With --pcap: only datagrams to this destination port.
    #[arg(long, value_name = "PORT", requires = "pcap")]
    pub(crate) pcap_port: Option<u16>,
    /// With --pcap: replay with the capture's gaps between datagrams (a
    /// paced run on one worker; --rate and --burst do not apply).
    #[arg(long, requires = "pcap", conflicts_with_all = ["rate", "bitrate", "burst"])]
    pub(crate) pcap_timing: bool,
    /// With --pcap-timing: this many times faster (0.5: half speed).
    #[arg(long, default_value_t = 1.0, requires = "pcap_timing")]
    pub(crate) speed: f64,
    /// How --payload-file is written.
    #[arg(long, default_value = "hex", value_parser = ["hex", "raw"], requires = "payload_file")]
    pub(crate) payload_format: String,
    /// DNS queries from FILE in dnsperf's format (`www.example.com A` per
    /// line), RD set; replies are matched by the DNS ID (--match id:0:2)
    /// and counted by response code and TC bit. `-`: standard input.
    #[arg(long, value_name = "FILE")]
    pub(crate) dns_queries: Option<std::path::PathBuf>,
    /// With --dns-queries: add an EDNS0 OPT record advertising this UDP
    /// payload size (512..65535; 1232 is the DNS flag day's).
    #[arg(long, value_name = "SIZE", requires = "dns_queries",
          value_parser = clap::value_parser!(u16).range(512..))]
    pub(crate) edns: Option<u16>,
}

/// Largest payload or query file read.
pub(crate) const MAX_FILE_BYTES: u64 = 64 << 20;

/// Hex digits (whitespace and a leading `0x` ignored) as bytes.
pub(crate) fn hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.strip_prefix("0x").unwrap_or(&s);
    // Pairs of bytes, not of chars: a line may hold any UTF-8 (a non-ASCII
    // character is refused below, never cut in two).
    if let Some(c) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("'{c}' is not a hex digit"));
    }
    if s.len() % 2 != 0 {
        return Err(format!("'{s}': an odd number of hex digits"));
    }
    s.as_bytes()
        .chunks_exact(2)
        .map(|p| {
            let d = |b: u8| char::from(b).to_digit(16).expect("checked above") as u8;
            Ok(d(p[0]) << 4 | d(p[1]))
        })
        .collect()
}

/// The payloads of a `--payload-file`: hex lines (blank lines and `#`
/// comments skipped), or with `raw` records of a u16 big-endian length
/// and that many bytes. What it allocates is at most the file's size.
pub fn payload_file(buf: &[u8], raw: bool) -> Result<Vec<Vec<u8>>, String> {
    if raw {
        return raw_records(buf);
    }
    let text =
        std::str::from_utf8(buf).map_err(|_| "not text: hex lines (or --payload-format raw)")?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, l)| hex(l).map_err(|e| format!("line {}: {e}", n + 1)))
        .collect()
}

fn raw_records(buf: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(format!("record {}: a length needs 2 bytes", out.len() + 1));
        };
        let n = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < n {
            return Err(format!(
                "record {}: {n} bytes announced, {} left",
                out.len() + 1,
                tail.len()
            ));
        }
        out.push(tail[..n].to_vec());
        rest = &tail[n..];
    }
    Ok(out)
}

/// The payloads asked for, and whether they are DNS queries; `None` when
/// no payload option was given (udpring's header is sent).
pub(crate) fn payloads(a: &PayloadArgs) -> Result<Option<(Payloads, bool)>, Failure> {
    let (list, dns) = if let Some(h) = &a.payload {
        (
            vec![hex(h).map_err(|e| usage(format!("--payload: {e}")))?],
            false,
        )
    } else if let Some(f) = &a.payload_file {
        let buf = crate::input::read_bounded(f, MAX_FILE_BYTES)?;
        let list = payload_file(&buf, a.payload_format == "raw")
            .map_err(|e| usage(format!("{}: {e}", f.display())))?;
        (list, false)
    } else if let Some(f) = &a.pcap {
        let buf = crate::input::read_bounded(f, MAX_FILE_BYTES)?;
        let named = |e: String| usage(format!("{}: {e}", f.display()));
        let cap = super::pcap::parse(&buf).map_err(named)?;
        let kept: Vec<_> = cap
            .datagrams
            .into_iter()
            .filter(|d| a.pcap_port.is_none_or(|p| d.dst_port == p))
            .collect();
        if kept.is_empty() {
            return Err(named(format!(
                "no UDP datagram{} to send ({} packets were not UDP or were fragments)",
                a.pcap_port
                    .map_or(String::new(), |p| format!(" to port {p}")),
                cap.skipped
            )));
        }
        let times: Vec<u64> = kept.iter().map(|d| d.ts_ns).collect();
        let p = Payloads::new(kept.into_iter().map(|d| d.payload))
            .and_then(|p| p.with_times(&times))
            .map_err(named)?;
        return Ok(Some((p, false)));
    } else if let Some(f) = &a.dns_queries {
        let buf = crate::input::read_bounded(f, MAX_FILE_BYTES)?;
        let named = |e: String| usage(format!("{}: {e}", f.display()));
        let text = std::str::from_utf8(&buf).map_err(|_| named("not text".into()))?;
        (dns::queries(text, a.edns).map_err(named)?, true)
    } else {
        return Ok(None);
    };
    let p = Payloads::new(list).map_err(usage)?;
    Ok(Some((p, dns)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_raw_records_parse_or_say_why() {
        assert_eq!(hex("0a0B 0c"), Ok(vec![10, 11, 12]));
        assert_eq!(hex("0x00ff"), Ok(vec![0, 255]));
        assert!(hex("abc").is_err());
        assert!(hex("zz").is_err());
        // Found by the fuzzer: a multi-byte character used to be cut in
        // two (a panic); it is refused, by name, with its line.
        assert_eq!(hex("0\u{592}0"), Err("'\u{592}' is not a hex digit".into()));
        assert!(
            payload_file("00\n\u{e9}e\n".as_bytes(), false)
                .unwrap_err()
                .starts_with("line 2: ")
        );
        assert_eq!(
            raw_records(&[0, 2, 7, 8, 0, 1, 9]),
            Ok(vec![vec![7, 8], vec![9]])
        );
        assert!(
            raw_records(&[0, 5, 1])
                .unwrap_err()
                .contains("5 bytes announced")
        );
        assert!(raw_records(&[0]).is_err());
    }
}
