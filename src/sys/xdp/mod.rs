//! AF_XDP: the kernel side of the `xdp` backend.
//!
//! | file | what |
//! |---|---|
//! | `bpf.rs` | the XDP port filter, assembled in Rust, loaded with `bpf(2)`, attached by a link |
//! | `xsk.rs` | an AF_XDP socket, its UMEM and its four rings (the ring protocol is explained there) |
//! | `netlink.rs` | links, routes and neighbours from the kernel, for the frames the backend builds |
//!
//! How the pieces fit: the engine loads one program per interface and one
//! XSKMAP with an entry per receive queue. Each worker owns one socket,
//! bound to one queue, whose UMEM is the worker's own buffer pool (one
//! chunk per slot), and puts it in the map. The program redirects the
//! engine's UDP port(s) on that queue to the socket; everything else goes
//! on to the kernel as if nothing were attached.

pub(crate) mod bpf;
pub(crate) mod netlink;
pub(crate) mod port;
pub(crate) mod xsk;

pub use bpf::XdpMode;
pub(crate) use xsk::RingSizes;
