//! Applications built on the engine: echo, and the flood benchmark.

pub mod bench;
pub mod echo;
