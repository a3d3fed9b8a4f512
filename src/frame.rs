//! Ethernet frames carrying UDP, as the `xdp` backend sees them: a checked
//! view of a received frame ([`UdpFrame::new_checked`]) and the headers of
//! a frame to send ([`Headers::write`]). Safe code over byte slices; fuzzed
//! (`fuzz/fuzz_targets/frame.rs`).
//!
//! What is accepted: Ethernet II, at most one 802.1Q tag, IPv4 without
//! options and not a fragment, or IPv6 with UDP as its first next header;
//! lengths that agree with each other and with the frame; a good IPv4
//! header checksum and a good UDP checksum. The XDP program sends nothing
//! else this way, but the parser does not rely on it.
//!
//! **Partial checksums.** A frame sent by a local socket through a veth
//! whose `tx-checksum-ip-generic` offload is on carries, in place of its
//! UDP checksum, only the sum of the pseudo-header (the device was to
//! finish it). In copy mode nothing says so; such a frame never crossed a
//! wire, and its checksum field equals that sum exactly. It is accepted
//! and counted as [`Checksum::Partial`] (`xdp_csum_partial`): a corrupted
//! frame would have to hit that one value by chance, as it would have to
//! hit a correct checksum.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Ethernet header bytes.
pub const ETH_LEN: usize = 14;
/// An 802.1Q tag's bytes.
pub const VLAN_LEN: usize = 4;
/// IPv4 header bytes (without options).
pub const IPV4_LEN: usize = 20;
/// IPv6 fixed header bytes.
pub const IPV6_LEN: usize = 40;
/// UDP header bytes.
pub const UDP_LEN: usize = 8;
/// The longest headers this module writes: Ethernet, a tag, IPv6, UDP.
pub const MAX_HEADERS: usize = ETH_LEN + VLAN_LEN + IPV6_LEN + UDP_LEN;

/// Why a frame was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than its headers say.
    Truncated,
    /// Not IPv4 or IPv6 (after at most one tag).
    NotIp,
    /// Not UDP, an IPv4 header with options, a fragment, or an IPv6
    /// extension header before UDP.
    NotPlainUdp,
    /// Lengths that do not agree.
    BadLength,
    /// A bad IPv4 header or UDP checksum (or a zero UDP checksum over IPv6).
    BadChecksum,
}

/// How the UDP checksum checked out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checksum {
    /// Complete and correct.
    Good,
    /// IPv4 without one (zero).
    Absent,
    /// The pseudo-header sum of a frame whose sender left the rest to an
    /// offload (see the module doc).
    Partial,
}

/// A received UDP frame, checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpFrame {
    /// Destination and source MAC.
    pub dst_mac: [u8; 6],
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// The 802.1Q tag control field, if tagged.
    pub vlan: Option<u16>,
    /// Sender.
    pub src: SocketAddr,
    /// Destination.
    pub dst: SocketAddr,
    /// TTL or hop limit.
    pub hops: u8,
    /// TOS byte or traffic class.
    pub tos: u8,
    /// Where the payload starts in the frame.
    pub payload_off: usize,
    /// Payload bytes.
    pub payload_len: usize,
    /// How the checksum checked out.
    pub checksum: Checksum,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The ones'-complement sum of `b` (as big-endian 16-bit words, a last odd
/// byte padded with zero) added to `acc`, not folded.
pub fn sum(acc: u64, b: &[u8]) -> u64 {
    let mut s = acc;
    let mut words = b.chunks_exact(4);
    for w in &mut words {
        s += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut pad = [0u8; 4];
    pad[..rest.len()].copy_from_slice(rest);
    s + u64::from(u32::from_be_bytes(pad))
}

/// Folds a sum to 16 bits.
pub fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn pseudo(src: IpAddr, dst: IpAddr, udp_len: usize) -> u64 {
    let s = match (src, dst) {
        (IpAddr::V4(a), IpAddr::V4(b)) => sum(sum(0, &a.octets()), &b.octets()),
        (IpAddr::V6(a), IpAddr::V6(b)) => sum(sum(0, &a.octets()), &b.octets()),
        _ => 0,
    };
    s + 17 + udp_len as u64
}

impl UdpFrame {
    /// Checks `f` and reads its headers.
    pub fn new_checked(f: &[u8]) -> Result<UdpFrame, FrameError> {
        if f.len() < ETH_LEN {
            return Err(FrameError::Truncated);
        }
        let mut l3 = ETH_LEN;
        let mut ty = be16(f, 12);
        let mut vlan = None;
        if ty == 0x8100 {
            if f.len() < ETH_LEN + VLAN_LEN {
                return Err(FrameError::Truncated);
            }
            vlan = Some(be16(f, 14));
            ty = be16(f, 16);
            l3 += VLAN_LEN;
        }
        let ip = &f[l3..];
        let (src, dst, hops, tos, udp_at, ip_end) = match ty {
            0x0800 => {
                if ip.len() < IPV4_LEN {
                    return Err(FrameError::Truncated);
                }
                if ip[0] != 0x45 || ip[9] != 17 || be16(ip, 6) & 0x3fff != 0 {
                    return Err(FrameError::NotPlainUdp);
                }
                let total = usize::from(be16(ip, 2));
                if total < IPV4_LEN + UDP_LEN {
                    return Err(FrameError::BadLength);
                }
                if total > ip.len() {
                    return Err(FrameError::Truncated);
                }
                if fold(sum(0, &ip[..IPV4_LEN])) != 0xffff {
                    return Err(FrameError::BadChecksum);
                }
                let s = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
                let d = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
                (IpAddr::V4(s), IpAddr::V4(d), ip[8], ip[1], IPV4_LEN, total)
            }
            0x86dd => {
                if ip.len() < IPV6_LEN {
                    return Err(FrameError::Truncated);
                }
                if ip[0] >> 4 != 6 || ip[6] != 17 {
                    return Err(FrameError::NotPlainUdp);
                }
                let plen = usize::from(be16(ip, 4));
                if plen < UDP_LEN {
                    return Err(FrameError::BadLength);
                }
                if IPV6_LEN + plen > ip.len() {
                    return Err(FrameError::Truncated);
                }
                let a = |at: usize| {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(&ip[at..at + 16]);
                    Ipv6Addr::from(o)
                };
                let tc = ((be16(ip, 0) >> 4) & 0xff) as u8;
                (
                    IpAddr::V6(a(8)),
                    IpAddr::V6(a(24)),
                    ip[7],
                    tc,
                    IPV6_LEN,
                    IPV6_LEN + plen,
                )
            }
            _ => return Err(FrameError::NotIp),
        };
        let udp = &ip[udp_at..ip_end];
        let udp_len = usize::from(be16(udp, 4));
        if udp_len < UDP_LEN || udp_len > udp.len() {
            return Err(FrameError::BadLength);
        }
        let udp = &udp[..udp_len];
        let field = be16(udp, 6);
        let checksum = if field == 0 {
            if src.is_ipv6() {
                return Err(FrameError::BadChecksum);
            }
            Checksum::Absent
        } else {
            let p = pseudo(src, dst, udp_len);
            if fold(sum(p, udp)) == 0xffff {
                Checksum::Good
            } else if field == fold(p) {
                Checksum::Partial
            } else {
                return Err(FrameError::BadChecksum);
            }
        };
        let mut dst_mac = [0u8; 6];
        let mut src_mac = [0u8; 6];
        dst_mac.copy_from_slice(&f[..6]);
        src_mac.copy_from_slice(&f[6..12]);
        Ok(UdpFrame {
            dst_mac,
            src_mac,
            vlan,
            src: SocketAddr::new(src, be16(udp, 0)),
            dst: SocketAddr::new(dst, be16(udp, 2)),
            hops,
            tos,
            payload_off: l3 + udp_at + UDP_LEN,
            payload_len: udp_len - UDP_LEN,
            checksum,
        })
    }
}

/// The headers of a frame to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Next hop's MAC.
    pub dst_mac: [u8; 6],
    /// Our interface's MAC.
    pub src_mac: [u8; 6],
    /// An 802.1Q tag control field to carry.
    pub vlan: Option<u16>,
    /// From (same family as `dst`).
    pub src: SocketAddr,
    /// To.
    pub dst: SocketAddr,
    /// TTL or hop limit.
    pub hops: u8,
    /// TOS byte or traffic class.
    pub tos: u8,
}

impl Headers {
    /// Bytes of headers before the payload.
    pub fn len(&self) -> usize {
        ETH_LEN
            + self.vlan.map_or(0, |_| VLAN_LEN)
            + if self.dst.is_ipv6() {
                IPV6_LEN
            } else {
                IPV4_LEN
            }
            + UDP_LEN
    }

    /// Always false: there are always headers.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the headers into `buf[at - self.len()..at]` for the payload
    /// at `buf[at..at + len]`, with both checksums. Returns where the frame
    /// starts, or `None` when the headers do not fit before `at`, the
    /// payload is not inside `buf`, the families differ, or the datagram
    /// is too long for one frame's length fields.
    pub fn write(&self, buf: &mut [u8], at: usize, len: usize) -> Option<usize> {
        let hl = self.len();
        let start = at.checked_sub(hl)?;
        if at.checked_add(len)? > buf.len() || len > 65535 - IPV6_LEN - UDP_LEN {
            return None;
        }
        let udp_len = UDP_LEN + len;
        let f = &mut buf[start..at + len];
        f[..6].copy_from_slice(&self.dst_mac);
        f[6..12].copy_from_slice(&self.src_mac);
        let mut l3 = ETH_LEN;
        if let Some(tci) = self.vlan {
            f[12..14].copy_from_slice(&0x8100u16.to_be_bytes());
            f[14..16].copy_from_slice(&tci.to_be_bytes());
            l3 += VLAN_LEN;
        }
        let (src, dst) = (self.src.ip(), self.dst.ip());
        let udp_at = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f[l3 - 2..l3].copy_from_slice(&0x0800u16.to_be_bytes());
                let total = u16::try_from(IPV4_LEN + udp_len).ok()?;
                let ip = &mut f[l3..l3 + IPV4_LEN];
                ip[0] = 0x45;
                ip[1] = self.tos;
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                ip[4..6].copy_from_slice(&[0, 0]); // ID: an atomic datagram (DF)
                ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
                ip[8] = self.hops;
                ip[9] = 17;
                ip[10..12].copy_from_slice(&[0, 0]);
                ip[12..16].copy_from_slice(&s.octets());
                ip[16..20].copy_from_slice(&d.octets());
                let c = !fold(sum(0, ip));
                ip[10..12].copy_from_slice(&c.to_be_bytes());
                l3 + IPV4_LEN
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f[l3 - 2..l3].copy_from_slice(&0x86ddu16.to_be_bytes());
                let ip = &mut f[l3..l3 + IPV6_LEN];
                let vtc = (6u32 << 28) | (u32::from(self.tos) << 20);
                ip[0..4].copy_from_slice(&vtc.to_be_bytes());
                ip[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
                ip[6] = 17;
                ip[7] = self.hops;
                ip[8..24].copy_from_slice(&s.octets());
                ip[24..40].copy_from_slice(&d.octets());
                l3 + IPV6_LEN
            }
            _ => return None,
        };
        let udp = &mut f[udp_at..];
        udp[0..2].copy_from_slice(&self.src.port().to_be_bytes());
        udp[2..4].copy_from_slice(&self.dst.port().to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        let mut c = !fold(sum(pseudo(src, dst, udp_len), udp));
        if c == 0 {
            c = 0xffff; // zero means "none"
        }
        udp[6..8].copy_from_slice(&c.to_be_bytes());
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(src: &str, dst: &str, vlan: Option<u16>) -> Headers {
        Headers {
            dst_mac: [2, 0, 0, 0, 0, 2],
            src_mac: [2, 0, 0, 0, 0, 1],
            vlan,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            hops: 64,
            tos: 0x28,
        }
    }

    #[test]
    fn frame_written_reads_back_over_v4_v6_and_a_tag() {
        for h in [
            hdr("10.0.0.1:9000", "10.0.0.2:40000", None),
            hdr("[fd00::1]:53", "[fd00::2]:5353", Some(7)),
            hdr("192.0.2.1:1", "192.0.2.2:2", Some(0x2001)),
        ] {
            for len in [0usize, 1, 3, 64, 1400] {
                let mut buf = vec![0u8; 2048];
                let at = 200;
                for (i, b) in buf[at..at + len].iter_mut().enumerate() {
                    *b = (i * 7) as u8;
                }
                let start = h.write(&mut buf, at, len).unwrap();
                assert_eq!(start, at - h.len());
                let f = UdpFrame::new_checked(&buf[start..at + len]).unwrap();
                assert_eq!((f.src, f.dst, f.vlan), (h.src, h.dst, h.vlan));
                assert_eq!((f.hops, f.tos), (64, 0x28));
                assert_eq!((f.payload_off, f.payload_len), (h.len(), len));
                assert_eq!(f.checksum, Checksum::Good);
                assert_eq!((f.dst_mac, f.src_mac), (h.dst_mac, h.src_mac));
                // Any flipped payload or header bit is caught.
                for at_bit in [start + 14 + 12, at + len.saturating_sub(1)] {
                    if at_bit >= at + len {
                        continue;
                    }
                    let mut bad = buf.clone();
                    bad[at_bit] ^= 0x10;
                    assert_eq!(
                        UdpFrame::new_checked(&bad[start..at + len]),
                        Err(FrameError::BadChecksum),
                        "{h:?} {len} bit at {at_bit}"
                    );
                }
            }
        }
    }

    #[test]
    fn frame_partial_and_absent_checksums_are_told_apart_from_bad_ones() {
        let h = hdr("10.0.0.1:9000", "10.0.0.2:40000", None);
        let mut buf = vec![0u8; 256];
        let start = h.write(&mut buf, 100, 10).unwrap();
        let ck = start + 14 + 20 + 6;
        let p = pseudo(h.src.ip(), h.dst.ip(), 18);
        buf[ck..ck + 2].copy_from_slice(&fold(p).to_be_bytes());
        let f = UdpFrame::new_checked(&buf[start..110]).unwrap();
        assert_eq!(f.checksum, Checksum::Partial);
        buf[ck..ck + 2].copy_from_slice(&[0, 0]);
        assert_eq!(
            UdpFrame::new_checked(&buf[start..110]).unwrap().checksum,
            Checksum::Absent
        );
        let h6 = hdr("[fd00::1]:1", "[fd00::2]:2", None);
        let start = h6.write(&mut buf, 100, 10).unwrap();
        let ck = start + 14 + 40 + 6;
        buf[ck..ck + 2].copy_from_slice(&[0, 0]);
        assert_eq!(
            UdpFrame::new_checked(&buf[start..110]),
            Err(FrameError::BadChecksum),
            "IPv6 requires a checksum"
        );
    }

    #[test]
    fn frame_refuses_what_is_not_plain_udp_or_does_not_add_up() {
        let h = hdr("10.0.0.1:9000", "10.0.0.2:40000", None);
        let mut buf = vec![0u8; 256];
        let start = h.write(&mut buf, 100, 10).unwrap();
        let good = buf[start..110].to_vec();
        let with = |at: usize, v: u8| {
            let mut f = good.clone();
            f[at] = v;
            UdpFrame::new_checked(&f)
        };
        assert_eq!(with(12, 0x08 ^ 0x0f), Err(FrameError::NotIp));
        assert_eq!(with(14, 0x46), Err(FrameError::NotPlainUdp), "options");
        assert_eq!(with(14 + 9, 6), Err(FrameError::NotPlainUdp), "TCP");
        assert_eq!(with(14 + 6, 0x20), Err(FrameError::NotPlainUdp), "MF");
        assert_eq!(with(14 + 3, 200), Err(FrameError::Truncated));
        assert_eq!(with(14 + 20 + 5, 200), Err(FrameError::BadLength));
        for n in 0..good.len() {
            assert!(UdpFrame::new_checked(&good[..n]).is_err(), "cut at {n}");
        }
        // Headers that do not fit before the payload are not written.
        assert_eq!(h.write(&mut buf, 10, 5), None);
        assert_eq!(
            hdr("10.0.0.1:1", "[fd00::1]:1", None).write(&mut buf, 100, 1),
            None
        );
    }
}
