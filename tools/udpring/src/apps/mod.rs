//! What the `udpring` command runs: echo (on the engine), the bench, the
//! load generator, path MTU discovery, a request/response client,
//! multicast tools, the fan-out relay, and the C reference loops
//! (`reference_sys`, the only unsafe code of the command: raw system
//! calls, as a C program makes them).

pub mod bench;
pub mod echo;
pub mod fanout;
pub mod header;
pub mod histogram;
pub mod load;
pub mod mcast;
pub mod pmtu;
pub mod reference;
pub mod reference_sys;
pub mod reqresp;
pub mod seq;
pub mod stages;
pub mod window;

/// The unspecified address (`0.0.0.0` or `::`) of an address's family.
pub use udpring::os::unspecified_like;
