//! `load --expect OFFSET:HEX`: bytes an answer must carry to be the answer
//! the run is about. A service that answers an error (memcached's
//! `SERVER_ERROR`, an empty `NOTFOUND`, a DNS `SERVFAIL`) answers fast,
//! and a load that counts every answer alike reads it as a fast service.
//! An answer without the bytes still counts as received, with its RTT (as
//! dnsperf counts every response code), and also as `unexpected`.

use std::fmt;

/// Where the bytes must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Starting at this byte of the answer (`OFFSET:HEX`).
    At(usize),
    /// Anywhere in the answer (`any:HEX`).
    Anywhere,
}

/// One check: `bytes` at `place` in every answer; with a `mask`, only the
/// mask's bits of the bytes at that place are compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    /// Where the bytes are looked for.
    pub place: Place,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// `OFFSET:HEX/MASK`: the bits that count, as long as `bytes`.
    pub mask: Option<Vec<u8>>,
    /// `any:HEX`: the search's table (Knuth-Morris-Pratt): for each prefix
    /// of `bytes`, the longest proper prefix that is also its suffix. The
    /// search is then linear in the answer whatever its bytes, as a
    /// stranger's answer may be made to slow a naive one.
    fallback: Vec<usize>,
}

impl Expect {
    /// `OFFSET:HEX`, e.g. `8:56414c5545` ("VALUE" after memcached's 8-byte
    /// UDP frame header); `OFFSET:HEX/MASK`, only the mask's bits compared
    /// (`3:00/0f`, a DNS answer's RCODE is NOERROR); `any:HEX`, the bytes
    /// anywhere in the answer.
    pub fn parse(s: &str) -> Result<Expect, String> {
        let (place, rest) = s.split_once(':').ok_or_else(|| {
            format!(
                "'{s}': give OFFSET:HEX (e.g. 8:56414c5545, \"VALUE\" at byte 8), \
                 OFFSET:HEX/MASK (3:00/0f) or any:HEX"
            )
        })?;
        let place = if place.trim().eq_ignore_ascii_case("any") {
            Place::Anywhere
        } else {
            Place::At(
                place
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{place}' is not a byte offset (0, 8, ...) or 'any'"))?,
            )
        };
        let (hex, mask) = match rest.split_once('/') {
            Some((h, m)) => (h, Some(m)),
            None => (rest, None),
        };
        let bytes = super::payload::hex(hex)?;
        if bytes.is_empty() {
            return Err(format!("'{s}': no bytes to expect after the ':'"));
        }
        let mask = match mask {
            None => None,
            Some(_) if place == Place::Anywhere => {
                return Err(format!(
                    "'{s}': a mask goes with an offset (OFFSET:HEX/MASK), not with any:"
                ));
            }
            Some(m) => {
                let m = super::payload::hex(m).map_err(|e| format!("the mask: {e}"))?;
                if m.len() != bytes.len() {
                    return Err(format!(
                        "'{s}': the mask has {} bytes, the bytes {}: give one mask byte per byte",
                        m.len(),
                        bytes.len()
                    ));
                }
                if let Some(i) = (0..m.len()).find(|&i| bytes[i] & !m[i] != 0) {
                    return Err(format!(
                        "'{s}': byte {i}, {:02x}, has bits outside its mask {:02x}: \
                         they would never be compared",
                        bytes[i], m[i]
                    ));
                }
                Some(m)
            }
        };
        let start = match place {
            Place::At(off) => off,
            Place::Anywhere => 0,
        };
        if start.saturating_add(bytes.len()) > udpring::MAX_UDP_PAYLOAD {
            return Err(format!(
                "'{s}' reaches past byte {}, the largest UDP payload",
                udpring::MAX_UDP_PAYLOAD
            ));
        }
        let fallback = match place {
            Place::Anywhere => fallback(&bytes),
            Place::At(_) => Vec::new(),
        };
        Ok(Expect {
            place,
            bytes,
            mask,
            fallback,
        })
    }

    /// Whether `answer` carries the bytes where they are expected (a
    /// shorter answer does not).
    pub fn holds(&self, answer: &[u8]) -> bool {
        let off = match self.place {
            Place::Anywhere => return self.found_in(answer),
            Place::At(off) => off,
        };
        let Some(got) = answer.get(off..off + self.bytes.len()) else {
            return false;
        };
        match &self.mask {
            None => got == &self.bytes[..],
            Some(m) => got
                .iter()
                .zip(m)
                .zip(&self.bytes)
                .all(|((g, m), b)| g & m == *b),
        }
    }

    /// Knuth-Morris-Pratt: whether `bytes` occur in `answer`, each byte of
    /// the answer read once (and the table's steps back bounded by the
    /// steps forward).
    fn found_in(&self, answer: &[u8]) -> bool {
        let p = &self.bytes;
        let mut k = 0;
        for &c in answer {
            while k > 0 && c != p[k] {
                k = self.fallback[k - 1];
            }
            if c == p[k] {
                k += 1;
                if k == p.len() {
                    return true;
                }
            }
        }
        false
    }
}

/// The Knuth-Morris-Pratt table of `p`: entry `i`, the length of the
/// longest proper prefix of `p[..=i]` that is also its suffix.
fn fallback(p: &[u8]) -> Vec<usize> {
    let mut f = vec![0; p.len()];
    let mut k = 0;
    for i in 1..p.len() {
        while k > 0 && p[i] != p[k] {
            k = f[k - 1];
        }
        if p[i] == p[k] {
            k += 1;
        }
        f[i] = k;
    }
    f
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.place {
            Place::At(off) => write!(f, "{off}:{}", hex(&self.bytes))?,
            Place::Anywhere => write!(f, "any:{}", hex(&self.bytes))?,
        }
        if let Some(m) = &self.mask {
            write!(f, "/{}", hex(m))?;
        }
        Ok(())
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
        assert_eq!((e.place, &e.bytes[..]), (Place::At(8), &b"VALUE"[..]));
        assert_eq!(e.to_string(), "8:56414c5545");
        assert_eq!(Expect::parse("0:0x00 01").unwrap().bytes, vec![0, 1]);
        for (bad, says) in [
            ("56414c5545", "give OFFSET:HEX"),
            ("x:56", "not a byte offset"),
            ("anywhere:56", "or 'any'"),
            ("any:", "no bytes"),
            ("any:00/ff", "a mask goes with an offset"),
            ("3:00/0", "the mask: '0': an odd number"),
            ("3:0000/0f", "the mask has 1 bytes, the bytes 2"),
            ("3:81/0f", "byte 0, 81, has bits outside its mask 0f"),
            ("3:00/zz", "the mask: 'z' is not a hex digit"),
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
        // What a result lists reads back as the same check.
        for text in ["3:00/0f", "any:4f4b", "0:ff", "ANY:4F4B"] {
            let e = Expect::parse(text).unwrap();
            assert_eq!(Expect::parse(&e.to_string()).unwrap(), e, "{text}");
        }
        assert_eq!(Expect::parse("ANY: 4F4B").unwrap().to_string(), "any:4f4b");
    }

    #[test]
    fn a_mask_compares_only_its_bits() {
        // A DNS answer's RCODE (the low four bits of byte 3) is NOERROR,
        // whatever its RA, AD and CD bits say.
        let noerror = Expect::parse("3:00/0f").unwrap();
        assert!(noerror.holds(&[0x12, 0x34, 0x81, 0x80]));
        assert!(noerror.holds(&[0x12, 0x34, 0x81, 0xa0]));
        assert!(!noerror.holds(&[0x12, 0x34, 0x81, 0x83]), "NXDOMAIN");
        assert!(!noerror.holds(&[0x12, 0x34, 0x81]), "too short");
        let qr = Expect::parse("2:80/80").unwrap();
        assert!(qr.holds(&[0, 0, 0x81]));
        assert!(!qr.holds(&[0, 0, 0x01]));
    }

    #[test]
    fn any_finds_the_bytes_wherever_they_are() {
        let ok = Expect::parse("any:4f4b").unwrap();
        assert!(ok.holds(b"OK"));
        assert!(ok.holds(b"status: OK\r\n"));
        assert!(ok.holds(b"OOOK"), "after a partial match");
        assert!(!ok.holds(b"O K"));
        assert!(!ok.holds(b"O"));
        assert!(!ok.holds(b""));
        // A pattern that overlaps itself: the table steps back, not to 0.
        let aab = Expect::parse("any:616162").unwrap();
        assert!(aab.holds(b"aaab"));
        assert!(!aab.holds(b"abab"));
        let abab = Expect::parse("any:61626163").unwrap();
        assert!(abab.holds(b"ababac"));
        assert!(!abab.holds(b"ababab"));
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
