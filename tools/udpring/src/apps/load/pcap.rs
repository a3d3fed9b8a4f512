//! The UDP payloads of a capture, to replay as requests: classic pcap
//! (microsecond or nanosecond, either byte order) and pcapng (section,
//! interface, enhanced and simple packet blocks), over Ethernet (with VLAN
//! tags), Linux cooked capture (SLL and SLL2), raw IP and BSD loopback;
//! IPv4 (unfragmented) and IPv6 (extension headers skipped, fragments
//! left out). Anything malformed is an error naming the packet; nothing in
//! a file can make this panic or allocate more than the file holds.

/// One UDP datagram of a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Captured {
    /// Capture time, nanoseconds (of the capture's clock).
    pub ts_ns: u64,
    /// Destination port.
    pub dst_port: u16,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// What a capture held: its UDP datagrams, and how many packets were left
/// out (not UDP, fragments, cut short by the snap length).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// The UDP datagrams, in capture order.
    pub datagrams: Vec<Captured>,
    /// Packets that were not whole UDP datagrams.
    pub skipped: u64,
}

/// Parses a capture file's bytes.
pub fn parse(buf: &[u8]) -> Result<Capture, String> {
    let magic = buf.get(..4).ok_or("not a capture: shorter than a header")?;
    match magic {
        [0x0a, 0x0d, 0x0d, 0x0a] => pcapng(buf),
        _ => classic(buf),
    }
}

fn u16_at(b: &[u8], at: usize, le: bool) -> Option<u16> {
    let x: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
    Some(if le {
        u16::from_le_bytes(x)
    } else {
        u16::from_be_bytes(x)
    })
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Option<u32> {
    let x: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(if le {
        u32::from_le_bytes(x)
    } else {
        u32::from_be_bytes(x)
    })
}

fn classic(buf: &[u8]) -> Result<Capture, String> {
    let (le, nanos) = match buf[..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] => (true, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (false, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (true, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (false, true),
        _ => return Err("not a pcap or pcapng capture (unknown magic)".into()),
    };
    let link = u32_at(buf, 20, le).ok_or("pcap header cut short")?;
    let mut cap = Capture::default();
    let mut at = 24;
    let mut n = 0u64;
    while at < buf.len() {
        n += 1;
        let bad = || format!("packet {n}: record cut short");
        let sec = u32_at(buf, at, le).ok_or_else(bad)?;
        let frac = u32_at(buf, at + 4, le).ok_or_else(bad)?;
        let incl = u32_at(buf, at + 8, le).ok_or_else(bad)? as usize;
        let data = buf.get(at + 16..at + 16 + incl).ok_or_else(bad)?;
        let ts = u64::from(sec) * 1_000_000_000 + u64::from(frac) * if nanos { 1 } else { 1000 };
        take(&mut cap, link, data, ts);
        at += 16 + incl;
    }
    Ok(cap)
}

fn pcapng(buf: &[u8]) -> Result<Capture, String> {
    let mut cap = Capture::default();
    let mut le = true;
    // Per interface of the section: link type, and ticks per second.
    let mut ifaces: Vec<(u32, u64)> = Vec::new();
    let mut at = 0;
    let mut n = 0u64;
    while at < buf.len() {
        n += 1;
        let bad = || format!("pcapng block {n}: cut short or malformed");
        let kind_raw: [u8; 4] = buf
            .get(at..at + 4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        if kind_raw == [0x0a, 0x0d, 0x0d, 0x0a] {
            le = match buf.get(at + 8..at + 12).ok_or_else(bad)? {
                [0x4d, 0x3c, 0x2b, 0x1a] => true,
                [0x1a, 0x2b, 0x3c, 0x4d] => false,
                _ => return Err(bad()),
            };
            ifaces.clear();
        }
        let kind = u32_at(buf, at, le).ok_or_else(bad)?;
        let len = u32_at(buf, at + 4, le).ok_or_else(bad)? as usize;
        if len < 12 || len % 4 != 0 {
            return Err(bad());
        }
        let block = buf.get(at..at + len).ok_or_else(bad)?;
        let body = &block[8..len - 4];
        match kind {
            1 => {
                let link = u32::from(u16_at(body, 0, le).ok_or_else(bad)?);
                ifaces.push((link, if_tsresol(body.get(8..).unwrap_or(&[]), le)));
            }
            6 => {
                let id = u32_at(body, 0, le).ok_or_else(bad)? as usize;
                let &(link, per_sec) = ifaces.get(id).ok_or_else(bad)?;
                let hi = u64::from(u32_at(body, 4, le).ok_or_else(bad)?);
                let lo = u64::from(u32_at(body, 8, le).ok_or_else(bad)?);
                let caplen = u32_at(body, 12, le).ok_or_else(bad)? as usize;
                let data = body.get(20..20 + caplen).ok_or_else(bad)?;
                let ticks = (hi << 32) | lo;
                let ts = (u128::from(ticks) * 1_000_000_000 / u128::from(per_sec)) as u64;
                take(&mut cap, link, data, ts);
            }
            3 => {
                // Simple packet block: interface 0, no timestamp.
                let &(link, _) = ifaces.first().ok_or_else(bad)?;
                let orig = u32_at(body, 0, le).ok_or_else(bad)? as usize;
                let data = body.get(4..).ok_or_else(bad)?;
                take(&mut cap, link, &data[..orig.min(data.len())], 0);
            }
            _ => {}
        }
        at += len;
    }
    Ok(cap)
}

/// The interface's timestamp ticks per second (option if_tsresol, 9);
/// microseconds when absent.
fn if_tsresol(mut opts: &[u8], le: bool) -> u64 {
    while let (Some(code), Some(len)) = (u16_at(opts, 0, le), u16_at(opts, 2, le)) {
        let len = usize::from(len);
        if code == 0 {
            break;
        }
        if code == 9
            && len == 1
            && let Some(&r) = opts.get(4)
        {
            let (base, exp) = if r & 0x80 != 0 {
                (2u64, r & 0x7f)
            } else {
                (10, r)
            };
            return base
                .checked_pow(u32::from(exp))
                .filter(|&x| x > 0)
                .unwrap_or(1_000_000);
        }
        let next = 4 + len.div_ceil(4) * 4;
        match opts.get(next..) {
            Some(rest) => opts = rest,
            None => break,
        }
    }
    1_000_000
}

/// Adds the packet's UDP datagram, or counts it as skipped.
fn take(cap: &mut Capture, link: u32, frame: &[u8], ts_ns: u64) {
    match udp(link, frame) {
        Some((dst_port, payload)) => cap.datagrams.push(Captured {
            ts_ns,
            dst_port,
            payload: payload.to_vec(),
        }),
        None => cap.skipped += 1,
    }
}

/// The IP packet inside a frame of this link type, and its version.
fn ip_of(link: u32, f: &[u8]) -> Option<&[u8]> {
    match link {
        // Ethernet, with any 802.1Q/802.1ad tags.
        1 => {
            let mut at = 12;
            let mut et = u16_at(f, at, false)?;
            while et == 0x8100 || et == 0x88a8 {
                at += 4;
                et = u16_at(f, at, false)?;
            }
            matches!(et, 0x0800 | 0x86dd).then(|| f.get(at + 2..))?
        }
        // Linux cooked capture v1: protocol at 14, header 16 bytes.
        113 => matches!(u16_at(f, 14, false)?, 0x0800 | 0x86dd).then(|| f.get(16..))?,
        // v2: protocol first, header 20 bytes.
        276 => matches!(u16_at(f, 0, false)?, 0x0800 | 0x86dd).then(|| f.get(20..))?,
        // Raw IP.
        101 | 12 | 14 | 228 | 229 => Some(f),
        // BSD loopback: a 4-byte address family, then IP.
        0 | 108 => f.get(4..),
        _ => None,
    }
}

/// `(destination port, payload)` of a whole, unfragmented UDP datagram.
fn udp(link: u32, frame: &[u8]) -> Option<(u16, &[u8])> {
    let ip = ip_of(link, frame)?;
    let seg = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16_at(ip, 2, false)?);
            let frag = u16_at(ip, 6, false)?;
            if ihl < 20 || *ip.get(9)? != 17 || frag & 0x3fff != 0 || total < ihl {
                return None;
            }
            ip.get(ihl..total)?
        }
        6 => {
            let plen = usize::from(u16_at(ip, 4, false)?);
            let mut next = *ip.get(6)?;
            let mut at = 40;
            let end = 40 + plen;
            // Hop-by-hop, routing and destination options: skip them.
            while matches!(next, 0 | 43 | 60) {
                next = *ip.get(at)?;
                at += (usize::from(*ip.get(at + 1)?) + 1) * 8;
            }
            if next != 17 {
                return None;
            }
            ip.get(at..end)?
        }
        _ => return None,
    };
    let len = usize::from(u16_at(seg, 4, false)?);
    let payload = seg.get(8..len)?;
    Some((u16_at(seg, 2, false)?, payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + UDP frame to `port` carrying `p`.
    fn eth_v4(port: u16, p: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + 8 + p.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&port.to_be_bytes());
        f.extend_from_slice(&((8 + p.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(p);
        f
    }

    fn classic_file(frames: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut b = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        for (usec, f) in frames {
            b.extend_from_slice(&1u32.to_le_bytes());
            b.extend_from_slice(&usec.to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(&(f.len() as u32).to_le_bytes());
            b.extend_from_slice(f);
        }
        b
    }

    #[test]
    fn classic_pcap_gives_udp_payloads_in_order_with_times() {
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&[0x08, 0x06, 1, 2, 3]);
        let b = classic_file(&[
            (0, eth_v4(53, b"one")),
            (500, arp),
            (1500, eth_v4(11211, b"two")),
        ]);
        let c = parse(&b).unwrap();
        assert_eq!(c.skipped, 1);
        assert_eq!(c.datagrams.len(), 2);
        assert_eq!(c.datagrams[0].payload, b"one");
        assert_eq!(c.datagrams[1].dst_port, 11211);
        assert_eq!(c.datagrams[1].ts_ns - c.datagrams[0].ts_ns, 1_500_000);
    }

    #[test]
    fn pcapng_with_nanosecond_resolution() {
        let block = |kind: u32, body: &[u8]| {
            let len = 12 + body.len().div_ceil(4) * 4;
            let mut b = kind.to_le_bytes().to_vec();
            b.extend_from_slice(&(len as u32).to_le_bytes());
            b.extend_from_slice(body);
            b.resize(len - 4, 0);
            b.extend_from_slice(&(len as u32).to_le_bytes());
            b
        };
        let mut shb = 0x1a2b3c4du32.to_le_bytes().to_vec();
        shb.extend_from_slice(&[1, 0, 0, 0]);
        shb.extend_from_slice(&u64::MAX.to_le_bytes());
        let mut idb = vec![1, 0, 0, 0, 0, 0, 4, 0];
        idb.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        let epb = |ticks: u64, f: &[u8]| {
            let mut e = 0u32.to_le_bytes().to_vec();
            e.extend_from_slice(&((ticks >> 32) as u32).to_le_bytes());
            e.extend_from_slice(&(ticks as u32).to_le_bytes());
            e.extend_from_slice(&(f.len() as u32).to_le_bytes());
            e.extend_from_slice(&(f.len() as u32).to_le_bytes());
            e.extend_from_slice(f);
            e
        };
        let mut b = block(0x0a0d0d0a, &shb);
        b.extend(block(1, &idb));
        b.extend(block(6, &epb(1_000, &eth_v4(9, b"x"))));
        b.extend(block(6, &epb(3_500, &eth_v4(9, b"yz"))));
        let c = parse(&b).unwrap();
        assert_eq!(c.datagrams.len(), 2);
        assert_eq!(c.datagrams[1].ts_ns - c.datagrams[0].ts_ns, 2_500);
        assert_eq!(c.datagrams[1].payload, b"yz");
    }

    /// An IPv6 + UDP packet (with a hop-by-hop header) to `port`.
    fn v6(port: u16, p: &[u8]) -> Vec<u8> {
        let udp_len = (8 + p.len()) as u16;
        let mut ip = vec![0x60, 0, 0, 0];
        ip.extend_from_slice(&(8 + udp_len).to_be_bytes());
        ip.extend_from_slice(&[0, 64]); // next: hop-by-hop
        ip.extend_from_slice(&[0; 32]);
        ip.extend_from_slice(&[17, 0, 0, 0, 0, 0, 0, 0]); // hop-by-hop: next UDP
        ip.extend_from_slice(&1u16.to_be_bytes());
        ip.extend_from_slice(&port.to_be_bytes());
        ip.extend_from_slice(&udp_len.to_be_bytes());
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(p);
        ip
    }

    #[test]
    fn ipv6_over_linux_cooked_captures_and_raw_ip() {
        // SLL2: protocol first, 20-byte header.
        let mut sll2 = vec![0x86, 0xdd];
        sll2.resize(20, 0);
        sll2.extend(v6(53, b"six"));
        // SLL (v1): protocol at 14, 16-byte header.
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&[0x86, 0xdd]);
        sll.extend(v6(54, b"cooked"));
        for (link, frame, port, want) in [
            (276u32, sll2, 53u16, &b"six"[..]),
            (113, sll, 54, &b"cooked"[..]),
            (101, v6(55, b"raw"), 55, &b"raw"[..]),
        ] {
            let mut b = classic_file(&[(0, frame)]);
            b[20..24].copy_from_slice(&link.to_le_bytes());
            let c = parse(&b).unwrap();
            assert_eq!(c.datagrams.len(), 1, "link {link}");
            assert_eq!(
                (c.datagrams[0].dst_port, &c.datagrams[0].payload[..]),
                (port, want)
            );
        }
    }

    #[test]
    fn fragments_and_other_protocols_are_skipped_and_junk_is_an_error() {
        let mut frag = eth_v4(53, b"frag");
        frag[20] = 0x20; // more fragments
        let c = parse(&classic_file(&[(0, frag)])).unwrap();
        assert_eq!((c.datagrams.len(), c.skipped), (0, 1));
        assert!(parse(b"hello world, not a capture").is_err());
        assert!(parse(&[0xd4, 0xc3]).is_err());
        let mut cut = classic_file(&[(0, eth_v4(53, b"abc"))]);
        cut.truncate(cut.len() - 2);
        assert!(parse(&cut).unwrap_err().contains("packet 1"));
    }

    #[test]
    fn any_bytes_parse_or_fail_without_panicking() {
        let base = classic_file(&[(0, eth_v4(53, b"abcdef")), (7, eth_v4(53, b"g"))]);
        for i in 0..base.len() {
            for v in [0u8, 0xff, 0x11, 0x45] {
                let mut b = base.clone();
                b[i] = v;
                let _ = parse(&b);
                let _ = parse(&b[..i]);
            }
        }
    }
}
