//! DNS queries from dnsperf's query file format, and the two things a
//! load generator reads from an answer: its response code and the TC bit.
//!
//! A query file has one query per line, `NAME TYPE` (`www.example.com A`);
//! blank lines and lines starting with `#` or `;` are skipped. Each becomes
//! a query with RD set and, with EDNS0, an OPT record advertising the UDP
//! size; the 16-bit ID at offset 0 is the load generator's to write.

/// A DNS response code's name, as dig and dnsperf print it.
pub fn rcode_name(rcode: u8) -> &'static str {
    const NAMES: [&str; 16] = [
        "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
        "NXRRSET", "NOTAUTH", "NOTZONE", "RCODE11", "RCODE12", "RCODE13", "RCODE14", "RCODE15",
    ];
    NAMES[usize::from(rcode & 0x0f)]
}

/// What an answer says: `(rcode, truncated)`; `None` if it is not a DNS
/// response (shorter than a header, or QR clear).
pub fn answer(buf: &[u8]) -> Option<(u8, bool)> {
    if buf.len() < 12 || buf[2] & 0x80 == 0 {
        return None;
    }
    Some((buf[3] & 0x0f, buf[2] & 0x02 != 0))
}

fn qtype(t: &str) -> Option<u16> {
    let t = t.to_ascii_uppercase();
    Some(match t.as_str() {
        "A" => 1,
        "NS" => 2,
        "CNAME" => 5,
        "SOA" => 6,
        "PTR" => 12,
        "HINFO" => 13,
        "MX" => 15,
        "TXT" => 16,
        "AAAA" => 28,
        "SRV" => 33,
        "NAPTR" => 35,
        "DS" => 43,
        "RRSIG" => 46,
        "NSEC" => 47,
        "DNSKEY" => 48,
        "TLSA" => 52,
        "SVCB" => 64,
        "HTTPS" => 65,
        "ANY" => 255,
        "CAA" => 257,
        _ => return t.strip_prefix("TYPE")?.parse().ok(),
    })
}

/// One query: `name` and `typ` as a query file spells them, with an EDNS0
/// OPT record advertising `edns` bytes if given. The ID (offset 0) is 0.
pub fn query(name: &str, typ: &str, edns: Option<u16>) -> Result<Vec<u8>, String> {
    let t = qtype(typ).ok_or_else(|| format!("unknown query type '{typ}'"))?;
    let mut q = vec![
        0,
        0,
        0x01,
        0x00,
        0,
        1,
        0,
        0,
        0,
        0,
        0,
        u8::from(edns.is_some()),
    ];
    let name = name.strip_suffix('.').unwrap_or(name);
    let mut wire = 1usize;
    if !name.is_empty() {
        for label in name.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(format!("'{name}': a label is 1..63 bytes"));
            }
            if !label.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') {
                return Err(format!("'{name}': only plain ASCII labels (no escapes)"));
            }
            wire += 1 + label.len();
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
    }
    if wire > 255 {
        return Err(format!("'{name}': a name is at most 255 bytes on the wire"));
    }
    q.push(0);
    q.extend_from_slice(&t.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    if let Some(size) = edns {
        // OPT: root name, type 41, class = UDP payload size, TTL 0, no data.
        q.push(0);
        q.extend_from_slice(&41u16.to_be_bytes());
        q.extend_from_slice(&size.to_be_bytes());
        q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    Ok(q)
}

/// Every query of a dnsperf query file; errors name the line.
pub fn queries(text: &str, edns: Option<u16>) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let mut it = l.split_whitespace();
        let (Some(name), Some(typ), None) = (it.next(), it.next(), it.next()) else {
            return Err(format!("line {}: expected 'NAME TYPE', got '{l}'", n + 1));
        };
        out.push(query(name, typ, edns).map_err(|e| format!("line {}: {e}", n + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_laid_out_as_on_the_wire() {
        let q = query("www.example.com", "A", None).unwrap();
        let mut want = vec![0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
        assert_eq!(q, want);
        let e = query("example.com.", "aaaa", Some(1232)).unwrap();
        assert_eq!(e[11], 1, "ARCOUNT");
        assert_eq!(
            &e[e.len() - 11..],
            &[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(query(".", "NS", None).unwrap().len(), 12 + 1 + 4);
        assert_eq!(query("x", "TYPE99", None).unwrap()[15..17], [0, 99]);
    }

    #[test]
    fn bad_lines_are_named() {
        let e = queries("# c\n\nwww.a.b A\nno-type\n", None).unwrap_err();
        assert!(e.starts_with("line 4"), "{e}");
        assert!(
            queries("a BOGUS", None)
                .unwrap_err()
                .contains("unknown query type")
        );
        assert!(query(&"a".repeat(64), "A", None).is_err());
        assert!(query(&["abc"; 70].join("."), "A", None).is_err());
        assert!(query("a\\.b", "A", None).is_err());
        assert_eq!(queries("a A\n; c\nb MX\n", None).unwrap().len(), 2);
    }

    #[test]
    fn answers_give_rcode_and_tc() {
        let mut r = query("a", "A", None).unwrap();
        assert_eq!(answer(&r), None, "a query, not a response");
        r[2] |= 0x80 | 0x02;
        r[3] = 3;
        assert_eq!(answer(&r), Some((3, true)));
        assert_eq!(rcode_name(3), "NXDOMAIN");
        assert_eq!(answer(&r[..11]), None);
    }
}
