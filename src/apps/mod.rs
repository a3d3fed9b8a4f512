//! Applications of the `udpring` command (feature `cli`): echo (on the
//! engine), the bench, the load generator, path MTU discovery, a
//! request/response client, multicast tools and the fan-out relay. Not a
//! stable library API.

pub mod bench;
pub mod echo;
pub mod fanout;
pub mod header;
pub mod load;
pub mod mcast;
pub mod pmtu;
pub mod reference;
pub mod reqresp;
pub mod seq;
pub mod stages;
pub mod window;

/// The unspecified address (`0.0.0.0` or `::`) of an address's family.
pub use crate::sys::unspecified_like;
