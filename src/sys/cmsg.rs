//! Control messages (`cmsg(3)`): one reader, one writer.
//!
//! A control area is a run of records, each a `cmsghdr` (`cmsg_len`,
//! `cmsg_level`, `cmsg_type`) followed by its data and padded to the
//! alignment of a `long` (`CMSG_ALIGN`). [`CmsgIter`] walks an area the
//! kernel filled (received datagrams, the error queue) and stops at the
//! first record that does not fit, so a short or hostile area ends the walk
//! instead of reading past it. [`CmsgWriter`] builds an area for a send.

use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;

use super::addr::SrcIp;

/// `SO_RXQ_OVFL` (libc does not export it on every target).
pub(crate) const SO_RXQ_OVFL: libc::c_int = 40;
/// `UDP_SEGMENT`: the GSO segment size of a send.
pub(crate) const UDP_SEGMENT: libc::c_int = 103;
/// `UDP_GRO`: on a socket, coalesce; on a datagram, its segment size.
pub(crate) const UDP_GRO: libc::c_int = 104;

/// `SO_TIMESTAMPNS` / `SCM_TIMESTAMPNS` (asm-generic/socket.h, the
/// 64-bit `timespec` layout): a software receive timestamp per datagram.
pub(crate) const SO_TIMESTAMPNS: libc::c_int = 35;
/// `SO_TIMESTAMPING` / `SCM_TIMESTAMPING`: `struct scm_timestamping`
/// (three timespecs; the first is the software one).
pub(crate) const SO_TIMESTAMPING: libc::c_int = 37;
/// `SCM_TS_OPT_ID` (Linux 6.13): the ID a send's TX timestamp carries.
pub(crate) const SCM_TS_OPT_ID: libc::c_int = 81;

/// Size of the control area for sends: a `UDP_SEGMENT` (a u16), an
/// `in6_pktinfo` (20 bytes, the larger of the two PKTINFOs), a TOS, and
/// a TX timestamp request (`SO_TIMESTAMPING` flags and `SCM_TS_OPT_ID`).
pub const SEND_CMSG_LEN: usize = space(2) + space(20) + space(4) + 2 * space(4);

const HDR_LEN: usize = mem::size_of::<libc::cmsghdr>();

/// `CMSG_ALIGN`: records are padded to the size of a `long`.
const fn align(n: usize) -> usize {
    (n + mem::size_of::<usize>() - 1) & !(mem::size_of::<usize>() - 1)
}

/// `CMSG_SPACE(n)`: what a record with `n` bytes of data takes.
pub const fn space(n: usize) -> usize {
    align(HDR_LEN) + align(n)
}

/// A control area with the alignment the kernel's `cmsghdr` has.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
pub struct CmsgSpace<const N: usize>(pub [u8; N]);

impl<const N: usize> Default for CmsgSpace<N> {
    fn default() -> Self {
        CmsgSpace([0; N])
    }
}

/// One record of a control area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cmsg<'a> {
    /// `cmsg_level` (`SOL_SOCKET`, `SOL_UDP`, `SOL_IP`, ...).
    pub level: libc::c_int,
    /// `cmsg_type`.
    pub ty: libc::c_int,
    /// The record's data (without padding).
    pub data: &'a [u8],
}

impl Cmsg<'_> {
    /// The data as a native-endian `i32`/`u32`, when it is at least 4 bytes.
    pub fn u32(&self) -> Option<u32> {
        let b = self.data.get(..4)?;
        Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// The data as a native-endian `u16`, when it is at least 2 bytes.
    pub fn u16(&self) -> Option<u16> {
        let b = self.data.get(..2)?;
        Some(u16::from_ne_bytes([b[0], b[1]]))
    }
}

/// Walks the records of a control area.
#[derive(Clone, Debug)]
pub struct CmsgIter<'a> {
    buf: &'a [u8],
    off: usize,
}

impl<'a> CmsgIter<'a> {
    /// The records of `buf` (the first `msg_controllen` bytes of an area).
    pub fn new(buf: &'a [u8]) -> Self {
        CmsgIter { buf, off: 0 }
    }
}

impl<'a> Iterator for CmsgIter<'a> {
    type Item = Cmsg<'a>;

    fn next(&mut self) -> Option<Cmsg<'a>> {
        let rest = self.buf.get(self.off..)?;
        if rest.len() < HDR_LEN {
            return None;
        }
        // SAFETY: `rest` holds at least HDR_LEN bytes; read_unaligned copes
        // with any alignment of the caller's buffer, and cmsghdr is plain
        // old data (any bit pattern is a value).
        let hdr: libc::cmsghdr = unsafe { std::ptr::read_unaligned(rest.as_ptr().cast()) };
        let len = hdr.cmsg_len;
        if len < HDR_LEN || len > rest.len() {
            // Malformed or cut short: end the walk.
            self.off = self.buf.len();
            return None;
        }
        self.off = self.off.saturating_add(align(len));
        Some(Cmsg {
            level: hdr.cmsg_level,
            ty: hdr.cmsg_type,
            data: &rest[HDR_LEN..len],
        })
    }
}

/// What the control messages of one received datagram said.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecvCmsg {
    /// `UDP_GRO`: the datagram is a train of segments of this size.
    pub gro_segment: Option<NonZeroU16>,
    /// `SO_RXQ_OVFL`: the socket's cumulative drop counter.
    pub rxq_ovfl: Option<u32>,
    /// `IP_PKTINFO` / `IPV6_PKTINFO`: the address the datagram was sent to.
    pub dst: Option<IpAddr>,
    /// `IP_PKTINFO`'s `ipi_spec_dst`: the local address the kernel would
    /// answer from (the destination for unicast; the receiving
    /// interface's address for a broadcast or a group).
    pub spec_dst: Option<Ipv4Addr>,
    /// The interface it arrived on (0 when the kernel did not say).
    pub ifindex: u32,
    /// `IP_TOS` / `IPV6_TCLASS` (with `recv_tos`): DSCP and ECN as the
    /// datagram arrived.
    pub tos: Option<u8>,
    /// `SCM_TIMESTAMPNS` (with `rx_timestamps`): when the kernel received
    /// it, nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
    pub rx_ns: Option<u64>,
    /// `IP_TTL` / `IPV6_HOPLIMIT` (when the guard reads the server mark):
    /// the TTL or hop limit it arrived with.
    pub hops: Option<u8>,
}

impl RecvCmsg {
    /// The address an answer to this datagram should leave from: the
    /// address it was sent to when that is one of this host's unicast
    /// addresses; for an IPv4 group or broadcast, the receiving
    /// interface's address (`ipi_spec_dst`); otherwise (an IPv6 group, or
    /// the kernel did not say) `None`: the kernel's choice.
    pub fn answer_from(&self) -> Option<IpAddr> {
        match self.dst? {
            IpAddr::V4(d) => self
                .spec_dst
                .filter(|a| !a.is_unspecified())
                .or_else(|| (!d.is_multicast() && !d.is_broadcast()).then_some(d))
                .map(IpAddr::V4),
            IpAddr::V6(d) => (!d.is_multicast() && !d.is_unspecified()).then_some(IpAddr::V6(d)),
        }
    }

    /// Reads the records the engine asks for; others are skipped.
    pub fn parse(control: &[u8]) -> Self {
        let mut out = RecvCmsg::default();
        for c in CmsgIter::new(control) {
            match (c.level, c.ty) {
                // The kernel writes an int; a u16 is accepted too.
                (libc::SOL_UDP, UDP_GRO) => {
                    let v = c.u32().map_or(c.u16().map(u32::from), Some);
                    out.gro_segment = v
                        .and_then(|v| u16::try_from(v).ok())
                        .and_then(NonZeroU16::new);
                }
                (libc::SOL_SOCKET, SO_RXQ_OVFL) => {
                    if let Some(v) = c.u32() {
                        out.rxq_ovfl = Some(v);
                    }
                }
                (libc::SOL_IP, libc::IP_PKTINFO)
                    if c.data.len() >= mem::size_of::<libc::in_pktinfo>() =>
                {
                    // SAFETY: the record holds a whole in_pktinfo (checked),
                    // plain old data; read_unaligned copes with alignment.
                    let p: libc::in_pktinfo =
                        unsafe { std::ptr::read_unaligned(c.data.as_ptr().cast()) };
                    out.dst = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
                    out.spec_dst = Some(Ipv4Addr::from(u32::from_be(p.ipi_spec_dst.s_addr)));
                    out.ifindex = p.ipi_ifindex as u32;
                }
                (libc::SOL_IPV6, libc::IPV6_PKTINFO)
                    if c.data.len() >= mem::size_of::<libc::in6_pktinfo>() =>
                {
                    // SAFETY: as above, for in6_pktinfo.
                    let p: libc::in6_pktinfo =
                        unsafe { std::ptr::read_unaligned(c.data.as_ptr().cast()) };
                    let a = Ipv6Addr::from(p.ipi6_addr.s6_addr);
                    out.dst = Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4));
                    out.ifindex = p.ipi6_ifindex;
                }
                // The kernel writes IP_TOS as one byte, IPV6_TCLASS as an int.
                (libc::SOL_IP, libc::IP_TOS) => out.tos = c.data.first().copied(),
                (libc::SOL_IPV6, libc::IPV6_TCLASS) => {
                    out.tos = c.u32().and_then(|v| u8::try_from(v).ok());
                }
                (libc::SOL_SOCKET, SO_TIMESTAMPNS) => out.rx_ns = timespec_ns(c.data),
                // Both an int.
                (libc::SOL_IP, libc::IP_TTL) | (libc::SOL_IPV6, libc::IPV6_HOPLIMIT) => {
                    out.hops = c.u32().and_then(|v| u8::try_from(v).ok());
                }
                _ => {}
            }
        }
        out
    }
}

/// A kernel `timespec` (two native-endian i64: seconds, nanoseconds) at
/// the start of `b`, as nanoseconds since the epoch; `None` when short,
/// zero (the kernel had none) or out of range.
pub(crate) fn timespec_ns(b: &[u8]) -> Option<u64> {
    let sec = i64::from_ne_bytes(b.get(..8)?.try_into().ok()?);
    let nsec = i64::from_ne_bytes(b.get(8..16)?.try_into().ok()?);
    if !(0..1_000_000_000).contains(&nsec) || sec <= 0 {
        return None;
    }
    u64::try_from(sec)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nsec as u64)
}

/// Builds a control area in a caller's buffer.
pub struct CmsgWriter<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> CmsgWriter<'a> {
    /// An empty area over `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        CmsgWriter { buf, len: 0 }
    }

    /// Appends a record; false (and nothing written) when it does not fit.
    pub fn push(&mut self, level: libc::c_int, ty: libc::c_int, data: &[u8]) -> bool {
        let need = space(data.len());
        let Some(room) = self.buf.get_mut(self.len..self.len + need) else {
            return false;
        };
        room.fill(0);
        // SAFETY: cmsghdr is plain old data; all-zero is valid.
        let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
        hdr.cmsg_len = HDR_LEN + data.len();
        hdr.cmsg_level = level;
        hdr.cmsg_type = ty;
        // SAFETY: `room` holds `need` >= HDR_LEN bytes; write_unaligned
        // needs no alignment.
        unsafe { std::ptr::write_unaligned(room.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
        room[HDR_LEN..HDR_LEN + data.len()].copy_from_slice(data);
        self.len += need;
        true
    }

    /// Bytes written (for `msg_controllen`).
    pub fn len(&self) -> usize {
        self.len
    }
}

/// Writes a send's control messages into `buf`: `UDP_SEGMENT` for a GSO
/// train, `IP_PKTINFO`/`IPV6_PKTINFO` for a chosen source, `IP_TOS` or
/// `IPV6_TCLASS` for a mark (`tos`, with `v4_path`: the datagram goes out
/// as IPv4, a v4-mapped destination included), and a software TX
/// timestamp request with its ID (`ts_id`: `SO_TIMESTAMPING` with
/// `SOF_TIMESTAMPING_TX_SOFTWARE`, `SCM_TS_OPT_ID`). Returns their length
/// (for `msg_controllen`; 0: none, send without a control area).
pub fn write_send(
    buf: &mut CmsgSpace<SEND_CMSG_LEN>,
    segment: Option<NonZeroU16>,
    src: SrcIp,
    tos: Option<(u8, bool)>,
    ts_id: Option<u32>,
) -> usize {
    if segment.is_none() && matches!(src, SrcIp::Any) && tos.is_none() && ts_id.is_none() {
        // Nothing beyond the destination (a reply, most often).
        return 0;
    }
    let mut w = CmsgWriter::new(&mut buf.0);
    if let Some(seg) = segment {
        let fits = w.push(libc::SOL_UDP, UDP_SEGMENT, &seg.get().to_ne_bytes());
        debug_assert!(fits, "SEND_CMSG_LEN holds a UDP_SEGMENT");
    }
    let fits = match src {
        SrcIp::Any => true,
        SrcIp::V4(a) => {
            // struct in_pktinfo { int ipi_ifindex; struct in_addr
            // ipi_spec_dst; struct in_addr ipi_addr; }: on send,
            // ipi_spec_dst is "the local address of the packet" (ip(7));
            // the interface is left to the route (0).
            let mut p = [0u8; 12];
            p[4..8].copy_from_slice(&a.octets());
            w.push(libc::SOL_IP, libc::IP_PKTINFO, &p)
        }
        SrcIp::V6(a, ifindex) => {
            // struct in6_pktinfo { struct in6_addr ipi6_addr; int
            // ipi6_ifindex; }: the source address and outgoing interface
            // (ipv6(7)).
            let mut p = [0u8; 20];
            p[..16].copy_from_slice(&a.octets());
            p[16..].copy_from_slice(&ifindex.to_ne_bytes());
            w.push(libc::SOL_IPV6, libc::IPV6_PKTINFO, &p)
        }
    };
    debug_assert!(fits, "SEND_CMSG_LEN holds a UDP_SEGMENT and a PKTINFO");
    if let Some((t, v4_path)) = tos {
        let (level, ty) = if v4_path {
            (libc::SOL_IP, libc::IP_TOS)
        } else {
            (libc::SOL_IPV6, libc::IPV6_TCLASS)
        };
        let fits = w.push(level, ty, &libc::c_int::from(t).to_ne_bytes());
        debug_assert!(fits, "SEND_CMSG_LEN holds a TOS too");
    }
    if let Some(id) = ts_id {
        let flags = libc::SOF_TIMESTAMPING_TX_SOFTWARE;
        let fits = w.push(libc::SOL_SOCKET, SO_TIMESTAMPING, &flags.to_ne_bytes())
            && w.push(libc::SOL_SOCKET, SCM_TS_OPT_ID, &id.to_ne_bytes());
        debug_assert!(fits, "SEND_CMSG_LEN holds a timestamp request too");
    }
    w.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(records: &[(i32, i32, &[u8])]) -> Vec<u8> {
        let mut buf = vec![0u8; 256];
        let mut w = CmsgWriter::new(&mut buf);
        for &(l, t, d) in records {
            assert!(w.push(l, t, d));
        }
        let n = w.len();
        buf.truncate(n);
        buf
    }

    #[test]
    fn reads_gro_and_ovfl_and_survives_garbage() {
        let a = area(&[
            (libc::SOL_UDP, UDP_GRO, &1400i32.to_ne_bytes()),
            (libc::SOL_SOCKET, SO_RXQ_OVFL, &7u32.to_ne_bytes()),
        ]);
        assert_eq!(a.len(), 2 * space(4));
        let c = RecvCmsg::parse(&a);
        assert_eq!(c.gro_segment, NonZeroU16::new(1400));
        assert_eq!(c.rxq_ovfl, Some(7));
        // A length that runs past the area ends the walk without a panic.
        let mut bad = a.clone();
        bad[0] = 200;
        assert_eq!(RecvCmsg::parse(&bad).gro_segment, None);
        assert_eq!(RecvCmsg::parse(&a[..5]), RecvCmsg::default());
        // A zero segment size is no segment size.
        let z = area(&[(libc::SOL_UDP, UDP_GRO, &0i32.to_ne_bytes())]);
        assert_eq!(RecvCmsg::parse(&z).gro_segment, None);
    }

    #[test]
    fn reads_the_ttl_and_the_hop_limit() {
        let a = area(&[(libc::SOL_IP, libc::IP_TTL, &200i32.to_ne_bytes())]);
        assert_eq!(RecvCmsg::parse(&a).hops, Some(200));
        let a = area(&[(libc::SOL_IPV6, libc::IPV6_HOPLIMIT, &64i32.to_ne_bytes())]);
        assert_eq!(RecvCmsg::parse(&a).hops, Some(64));
        let a = area(&[(libc::SOL_IP, libc::IP_TTL, &300i32.to_ne_bytes())]);
        assert_eq!(RecvCmsg::parse(&a).hops, None, "not a TTL");
        let a = area(&[(libc::SOL_IP, libc::IP_TTL, &[200u8][..])]);
        assert_eq!(RecvCmsg::parse(&a).hops, None, "too short");
    }

    #[test]
    fn reads_a_receive_timestamp_and_refuses_a_bad_one() {
        let ts = |sec: i64, nsec: i64| {
            let mut d = sec.to_ne_bytes().to_vec();
            d.extend_from_slice(&nsec.to_ne_bytes());
            d
        };
        let good = ts(1_700_000_000, 123_456_789);
        let a = area(&[(libc::SOL_SOCKET, SO_TIMESTAMPNS, &good)]);
        assert_eq!(RecvCmsg::parse(&a).rx_ns, Some(1_700_000_000_123_456_789));
        for bad in [
            ts(1, 1_000_000_000),
            ts(0, 0),
            ts(-5, 1),
            good[..12].to_vec(),
        ] {
            let a = area(&[(libc::SOL_SOCKET, SO_TIMESTAMPNS, &bad)]);
            assert_eq!(RecvCmsg::parse(&a).rx_ns, None, "{bad:?}");
        }
    }

    #[test]
    fn writer_refuses_what_does_not_fit() {
        let mut s = CmsgSpace::<SEND_CMSG_LEN>::default();
        assert_eq!(
            write_send(&mut s, NonZeroU16::new(1200), SrcIp::Any, None, None),
            24
        );
        let r: Vec<Cmsg<'_>> = CmsgIter::new(&s.0).collect();
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].level, r[0].ty, r[0].u16()),
            (libc::SOL_UDP, UDP_SEGMENT, Some(1200))
        );
        let mut small = [0u8; 20];
        let mut w = CmsgWriter::new(&mut small);
        assert!(!w.push(libc::SOL_UDP, UDP_SEGMENT, &[0, 0]));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_send_area_carries_the_segment_and_the_source() {
        let mut s = CmsgSpace::<SEND_CMSG_LEN>::default();
        assert_eq!(
            write_send(&mut s, None, SrcIp::Any, None, None),
            0,
            "nothing to say"
        );
        let a6: Ipv6Addr = "fe80::12".parse().unwrap();
        let n = write_send(
            &mut s,
            NonZeroU16::new(1200),
            SrcIp::V6(a6, 7),
            Some((0xb8, false)),
            Some(0xdead_beef),
        );
        assert_eq!(n, SEND_CMSG_LEN, "the five records fill the area exactly");
        let r: Vec<Cmsg<'_>> = CmsgIter::new(&s.0[..n]).collect();
        assert_eq!(r.len(), 5);
        assert_eq!(
            (r[3].ty, r[3].u32(), r[4].ty, r[4].u32()),
            (
                SO_TIMESTAMPING,
                Some(libc::SOF_TIMESTAMPING_TX_SOFTWARE),
                SCM_TS_OPT_ID,
                Some(0xdead_beef)
            )
        );
        assert_eq!(
            (r[2].level, r[2].ty, r[2].u32()),
            (libc::SOL_IPV6, libc::IPV6_TCLASS, Some(0xb8))
        );
        assert_eq!(
            (r[0].level, r[0].ty, r[0].u16()),
            (libc::SOL_UDP, UDP_SEGMENT, Some(1200))
        );
        assert_eq!((r[1].level, r[1].ty), (libc::SOL_IPV6, libc::IPV6_PKTINFO));
        // The kernel's own layout, read back as the receive side reads it.
        let back = RecvCmsg::parse(&s.0[n - 3 * space(4) - space(20)..n - 3 * space(4)]);
        assert_eq!((back.dst, back.ifindex), (Some(IpAddr::V6(a6)), 7));

        let a4 = Ipv4Addr::new(198, 18, 5, 2);
        let n = write_send(&mut s, None, SrcIp::V4(a4), None, None);
        let back = RecvCmsg::parse(&s.0[..n]);
        assert_eq!(
            (back.spec_dst, back.dst, back.ifindex),
            (Some(a4), Some(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), 0),
            "ipi_spec_dst carries the source; ipi_addr and the interface are left to the kernel"
        );
    }

    mod props {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes at all: the walk ends, nothing panics, and every
            /// record it yields lies inside the area.
            #[test]
            fn random_areas_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
                let mut seen = 0;
                for c in CmsgIter::new(&buf) {
                    prop_assert!(c.data.len() <= buf.len());
                    seen += 1;
                    prop_assert!(seen <= buf.len() / HDR_LEN);
                }
                let _ = RecvCmsg::parse(&buf);
            }

            /// What the writer writes, the reader reads back, record by
            /// record; any cut of the area yields a prefix of the records.
            #[test]
            fn written_records_read_back(
                recs in proptest::collection::vec(
                    (any::<i32>(), any::<i32>(), proptest::collection::vec(any::<u8>(), 0..40)),
                    0..6,
                ),
                cut in any::<prop::sample::Index>(),
            ) {
                let mut buf = vec![0u8; 512];
                let mut w = CmsgWriter::new(&mut buf);
                for (l, t, d) in &recs {
                    prop_assert!(w.push(*l, *t, d));
                }
                let n = w.len();
                let back: Vec<(i32, i32, Vec<u8>)> = CmsgIter::new(&buf[..n])
                    .map(|c| (c.level, c.ty, c.data.to_vec()))
                    .collect();
                prop_assert_eq!(&back, &recs);
                let cut = cut.index(n + 1);
                let part: Vec<(i32, i32, Vec<u8>)> = CmsgIter::new(&buf[..cut])
                    .map(|c| (c.level, c.ty, c.data.to_vec()))
                    .collect();
                prop_assert_eq!(&part[..], &recs[..part.len()]);
            }

            /// The datagram records the engine reads: a GRO segment size and
            /// a drop counter, in either order, read back exactly.
            #[test]
            fn gro_and_drops_read_back(seg in any::<u16>(), drops in any::<u32>(), swap in any::<bool>()) {
                let mut buf = vec![0u8; 128];
                let mut w = CmsgWriter::new(&mut buf);
                let gro = (libc::SOL_UDP, UDP_GRO, (seg as i32).to_ne_bytes());
                let ovfl = (libc::SOL_SOCKET, SO_RXQ_OVFL, drops.to_ne_bytes());
                if swap {
                    w.push(ovfl.0, ovfl.1, &ovfl.2);
                    w.push(gro.0, gro.1, &gro.2);
                } else {
                    w.push(gro.0, gro.1, &gro.2);
                    w.push(ovfl.0, ovfl.1, &ovfl.2);
                }
                let n = w.len();
                let c = RecvCmsg::parse(&buf[..n]);
                prop_assert_eq!(c.gro_segment, NonZeroU16::new(seg));
                prop_assert_eq!(c.rxq_ovfl, Some(drops));
            }
        }
    }
}
