//! Applications: echo (on the engine), the bench, the load generator,
//! path MTU discovery and a request/response client.

pub mod bench;
pub mod echo;
pub mod fanout;
pub mod header;
pub mod load;
pub mod mcast;
pub mod pmtu;
pub mod reqresp;
