//! The sizes everything else is measured by: the largest UDP payloads,
//! and the headroom every receive slot keeps before its payload. On the
//! ground floor: they depend on nothing.

/// Largest UDP payload over IPv4 (65535 - 20 - 8).
pub const MAX_UDP_PAYLOAD: usize = 65507;
/// Largest UDP payload over IPv6 without jumbograms (65535 - 8).
pub const MAX_UDP6_PAYLOAD: usize = 65527;

/// Size of the name area reserved in each receive slot for a source
/// address: a `sockaddr_in6` (28 bytes) rounded up so what follows stays
/// 8-byte aligned.
pub const NAME_LEN: usize = 32;
/// Size of the control area reserved in each receive slot, as
/// `CMSG_SPACE` on 64-bit Linux: `UDP_GRO` (24), `SO_RXQ_OVFL` (24),
/// `IPV6_PKTINFO` (40; `IP_PKTINFO` is 32), and room for a TOS/TCLASS (24),
/// a timestamp (32) and a TTL / hop limit (24).
pub const RECV_CMSG_LEN: usize = 168;
/// Bytes reserved at the start of every slot, before the payload. The uring
/// backend's kernel writes `io_uring_recvmsg_out` (16 bytes), the name
/// (32 bytes) and the control data (168 bytes) there; the other
/// backends leave it unused so that every backend truncates at the same
/// payload size.
pub const HEADROOM: usize = 16 + NAME_LEN + RECV_CMSG_LEN;
