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
