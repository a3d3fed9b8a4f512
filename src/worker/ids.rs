//! Small value types a handler names things with: a worker's socket
//! ([`SocketId`], or its index through [`SocketRef`]) and a datagram's ECN
//! field ([`Ecn`]).

/// One of a worker's sockets: the engine's bind (`SocketId::MAIN`, and
/// with `Config::sockets_per_worker` the sockets after it), then one per
/// `Config::also_bind` address, in that order, the same in every worker.
/// A handler that serves several binds finds each by its address
/// ([`crate::Transport::socket_at`]) and keeps the id; every `_via` method, and
/// each that names a socket, takes a `SocketId` (or its index as `usize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(u16);

impl SocketId {
    /// The worker's first socket, on `Config::bind`.
    pub const MAIN: SocketId = SocketId(0);

    /// The socket with index `i`.
    pub(crate) fn from_index(i: u16) -> SocketId {
        SocketId(i)
    }

    /// Its index among the worker's sockets.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

impl From<SocketId> for usize {
    fn from(s: SocketId) -> usize {
        s.index()
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for usize {}
    impl Sealed for super::SocketId {}
}

/// A way to name one of a worker's sockets: a [`SocketId`], or its index
/// (`0` for the first). Sealed.
pub trait SocketRef: sealed::Sealed {
    /// The socket's index among the worker's sockets.
    fn index(self) -> usize;
}

impl SocketRef for usize {
    fn index(self) -> usize {
        self
    }
}

impl SocketRef for SocketId {
    fn index(self) -> usize {
        SocketId::index(self)
    }
}

/// The ECN field of a datagram (RFC 3168): the TOS byte's or traffic
/// class's two low bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ecn {
    /// `00`: the sender does not do ECN.
    NotEct,
    /// `01`: ECN-capable, ECT(1) (L4S).
    Ect1,
    /// `10`: ECN-capable, ECT(0).
    Ect0,
    /// `11`: congestion experienced, marked by a router on the way.
    Ce,
}

impl Ecn {
    /// The ECN field of a TOS byte / traffic class.
    pub fn from_tos(tos: u8) -> Ecn {
        match tos & 0b11 {
            0b00 => Ecn::NotEct,
            0b01 => Ecn::Ect1,
            0b10 => Ecn::Ect0,
            _ => Ecn::Ce,
        }
    }

    /// Its two bits, for a TOS byte (`dscp << 2 | ecn.bits()`).
    pub fn bits(self) -> u8 {
        match self {
            Ecn::NotEct => 0b00,
            Ecn::Ect1 => 0b01,
            Ecn::Ect0 => 0b10,
            Ecn::Ce => 0b11,
        }
    }
}
