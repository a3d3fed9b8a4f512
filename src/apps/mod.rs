//! Applications built on the engine: echo, and the flood benchmark.

pub mod bench;
pub mod echo;
pub mod header;
pub mod load;
pub mod pmtu;
