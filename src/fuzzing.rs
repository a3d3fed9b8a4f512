//! Entry points for the fuzzer (`fuzz/`, feature `fuzzing`): not an API.
//! Each takes any bytes, must never panic, and checks what its parser
//! promises of what it returns.

use crate::sys::addr::RawAddr;
use crate::sys::cmsg::RecvCmsg;
use crate::sys::errqueue::{Queued, parse_entry};
use crate::sys::uring::{parse_recv, recv_template};

/// What the kernel writes beside a datagram, read by the engine's own
/// parsers: the control messages of a receive (`RecvCmsg`), an error-queue
/// entry (ICMP errors, TX timestamps), the multishot receive's record
/// (`io_uring_recvmsg_out`, name, control data) and a source address.
pub fn cmsg(data: &[u8]) {
    let c = RecvCmsg::parse(data);
    let _ = c.answer_from();
    if let Some(seg) = c.gro_segment {
        assert!(seg.get() > 0);
    }
    if let Queued::TxTimestamp { ns, .. } = parse_entry(data, None) {
        assert!(ns >= 1_000_000_000, "a stamp from a positive second");
    }
    if let Some(m) = parse_recv(0, data, &recv_template()) {
        assert!(m.len as usize <= data.len(), "a payload inside the buffer");
        let _ = m.src.to_socket_addr();
    }
    let _ = RawAddr::from_bytes(data).to_socket_addr();
}

/// A frame as the `xdp` backend receives it (`frame::UdpFrame`), and the
/// kernel's netlink answers it builds frames from. An accepted frame's
/// payload lies inside it, and headers written from what was read read
/// back the same.
pub fn frame(data: &[u8]) {
    use crate::frame::{Checksum, Headers, UdpFrame};
    use crate::sys::xdp::netlink;
    if let Ok(f) = UdpFrame::new_checked(data) {
        assert!(f.payload_off + f.payload_len <= data.len());
        assert_eq!(f.src.is_ipv6(), f.dst.is_ipv6());
        let h = Headers {
            dst_mac: f.src_mac,
            src_mac: f.dst_mac,
            vlan: f.vlan,
            src: f.dst,
            dst: f.src,
            hops: f.hops,
            tos: f.tos,
        };
        let mut buf = data.to_vec();
        let start = h
            .write(&mut buf, f.payload_off, f.payload_len)
            .expect("the answer's headers fit where the question's were");
        let back = UdpFrame::new_checked(&buf[start..f.payload_off + f.payload_len])
            .expect("what was written reads back");
        assert_eq!((back.src, back.dst), (f.dst, f.src));
        assert_eq!(back.checksum, Checksum::Good);
        assert_eq!(back.payload_len, f.payload_len);
    }
    if let Ok((_, body)) = netlink::parse_reply(data) {
        let _ = netlink::parse_link(body);
        let _ = netlink::parse_route(body);
        let _ = netlink::parse_neigh(body);
    }
    for (_, d) in netlink::attrs(data) {
        assert!(d.len() <= data.len());
    }
}
