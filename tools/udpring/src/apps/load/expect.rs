//! `load --expect OFFSET:HEX`: bytes an answer must carry to be the answer
//! the run is about. A service that answers an error (memcached's
//! `SERVER_ERROR`, an empty `NOTFOUND`, a DNS `SERVFAIL`) answers fast,
//! and a load that counts every answer alike reads it as a fast service.
//! An answer without the bytes still counts as received, with its RTT (as
//! dnsperf counts every response code), and also as `unexpected`.

use std::fmt;

/// One check: `bytes` at byte `offset` of every answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Where in the answer the bytes start.
    pub offset: usize,
    /// The bytes.
    pub bytes: Vec<u8>,
}

impl Expect {
    /// `OFFSET:HEX`, e.g. `8:56414c5545` ("VALUE" after memcached's 8-byte
    /// UDP frame header).
    pub fn parse(s: &str) -> Result<Expect, String> {
        let (off, hex) = s.split_once(':').ok_or_else(|| {
            format!("'{s}': give OFFSET:HEX, e.g. 8:56414c5545 (\"VALUE\" at byte 8)")
        })?;
        let offset: usize = off
            .trim()
            .parse()
            .map_err(|_| format!("'{off}' is not a byte offset (0, 8, ...)"))?;
        let bytes = super::payload::hex(hex)?;
        if bytes.is_empty() {
            return Err(format!("'{s}': no bytes to expect after the ':'"));
        }
        if offset.saturating_add(bytes.len()) > udpring::MAX_UDP_PAYLOAD {
            return Err(format!(
                "'{s}' reaches past byte {}, the largest UDP payload",
                udpring::MAX_UDP_PAYLOAD
            ));
        }
        Ok(Expect { offset, bytes })
    }

    /// Whether `answer` carries the bytes where they are expected (a
    /// shorter answer does not).
    pub fn holds(&self, answer: &[u8]) -> bool {
        answer.get(self.offset..self.offset + self.bytes.len()) == Some(&self.bytes[..])
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.offset, hex(&self.bytes))
    }
}

/// The checks as a result lists them (`expect`): OFFSET:HEX each.
pub fn listed(checks: &[Expect]) -> Vec<String> {
    checks.iter().map(Expect::to_string).collect()
}

/// Bytes as lowercase hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// How much of the first answer that failed the checks a result keeps, to
/// show what the service sent instead.
pub const SAMPLE: usize = 32;

/// An answer's first [`SAMPLE`] bytes as hex and as text (`.` for what
/// is not printable ASCII, so nothing a server sends can steer the
/// terminal): `4552524f52 "ERROR"`.
pub fn shown(answer: &[u8]) -> String {
    let b = &answer[..answer.len().min(SAMPLE)];
    let text: String = b
        .iter()
        .map(|&x| match x {
            0x20..=0x7e => char::from(x),
            _ => '.',
        })
        .collect();
    format!("{} \"{text}\"", hex(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offset_and_hex_and_refuses_what_cannot_be_checked() {
        let e = Expect::parse("8:56414c5545").unwrap();
        assert_eq!((e.offset, &e.bytes[..]), (8, &b"VALUE"[..]));
        assert_eq!(e.to_string(), "8:56414c5545");
        assert_eq!(Expect::parse("0:0x00 01").unwrap().bytes, vec![0, 1]);
        for (bad, says) in [
            ("56414c5545", "give OFFSET:HEX"),
            ("x:56", "not a byte offset"),
            ("-1:56", "not a byte offset"),
            ("8:", "no bytes"),
            ("8:5", "odd number"),
            ("8:zz", "not a hex digit"),
            ("65507:00", "largest UDP payload"),
            ("18446744073709551615:00", "largest UDP payload"),
        ] {
            let err = Expect::parse(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        assert!(Expect::parse("65506:00").is_ok());
    }

    #[test]
    fn holds_only_with_the_bytes_at_the_offset() {
        let e = Expect::parse("2:4f4b").unwrap();
        assert!(e.holds(b"..OK"));
        assert!(e.holds(b"..OK and more"));
        assert!(!e.holds(b"OK.."));
        assert!(!e.holds(b"..O"));
        assert!(!e.holds(b""));
    }
}
