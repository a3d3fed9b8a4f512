//! What the API reports: errors the kernel raised for a socket
//! ([`ErrorEvent`], handed to [`crate::Handler::on_error`]) and why a send
//! was not queued ([`SendError`]).

use std::fmt;
use std::net::SocketAddr;

use crate::sys::QueuedError;

/// An error the kernel reported for a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorEvent {
    /// ICMP port unreachable: nothing listens at `peer`.
    ConnectionRefused {
        /// Where the refused datagram went, when the kernel says.
        peer: Option<SocketAddr>,
    },
    /// The kernel refused a send as too big for the path (`EMSGSIZE`:
    /// larger than the path MTU it knows, with
    /// [`Config::pmtu_discover`](crate::Config)); `mtu` is what it
    /// reported, when it did. The datagram did not leave (counted in
    /// [`crate::Stats::send_errors`]).
    MessageTooLong {
        /// Destination of the datagram.
        peer: Option<SocketAddr>,
        /// Path MTU from the kernel's report or the local route.
        mtu: Option<u32>,
    },
    /// A router said a datagram that left was too big for its next hop
    /// (ICMP "fragmentation needed", ICMPv6 "packet too big"), with the MTU
    /// it can carry: that datagram did not arrive, and the kernel has
    /// lowered the path MTU (the next sends are cut to it, or refused as
    /// [`ErrorEvent::MessageTooLong`] with `pmtu_discover`).
    PacketTooBig {
        /// Destination of the datagram.
        peer: Option<SocketAddr>,
        /// The MTU the router reported.
        mtu: Option<u32>,
    },
    /// Host or network unreachable, or another ICMP error.
    Unreachable {
        /// Destination of the datagram.
        peer: Option<SocketAddr>,
        /// The errno the kernel mapped it to (`EHOSTUNREACH`, `ENETUNREACH`, …).
        errno: i32,
    },
    /// The kernel refused a send for a reason it does not explain in the
    /// error queue (`ENOBUFS`, `EINVAL`, `EACCES`, `EPERM`, ...), or twice
    /// for ICMP reports about earlier datagrams (`ECONNREFUSED`, ...: an
    /// unconnected socket fails its next send with such a report; the
    /// engine sends once more; the reports come from the error queue as
    /// events of their own). Its datagrams are counted in
    /// [`crate::Stats::send_errors`] under `errno` and are not sent.
    SendFailed {
        /// Where it was going.
        peer: Option<SocketAddr>,
        /// Why.
        errno: i32,
    },
    /// A send the network would not take (the socket's send buffer stayed
    /// full), given up so that its slot could receive again: its
    /// datagrams are counted in [`crate::Stats::send_blocked`] and are not
    /// sent. (What is still queued at a stop is counted in
    /// [`crate::Stats::cancelled`] and told to
    /// [`crate::Handler::on_cancelled`].)
    SendGivenUp {
        /// Where it was going.
        peer: Option<SocketAddr>,
        /// Its datagrams (each segment of a train).
        datagrams: u64,
    },
    /// Any other error, with its errno.
    Other {
        /// Destination, when known.
        peer: Option<SocketAddr>,
        /// The errno.
        errno: i32,
    },
}

impl fmt::Display for ErrorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peer =
            |p: &Option<SocketAddr>| p.map_or("an unknown peer".to_string(), |a| a.to_string());
        match self {
            ErrorEvent::ConnectionRefused { peer: p } => {
                write!(f, "{}: port unreachable (connection refused)", peer(p))
            }
            ErrorEvent::MessageTooLong { peer: p, mtu } => match mtu {
                Some(m) => write!(f, "{}: message too long for the path (MTU {m})", peer(p)),
                None => write!(f, "{}: message too long for the path", peer(p)),
            },
            ErrorEvent::PacketTooBig { peer: p, mtu } => match mtu {
                Some(m) => write!(f, "{}: a router reported packet too big (MTU {m})", peer(p)),
                None => write!(f, "{}: a router reported packet too big", peer(p)),
            },
            ErrorEvent::Unreachable { peer: p, errno } => write!(
                f,
                "{}: unreachable ({})",
                peer(p),
                std::io::Error::from_raw_os_error(*errno)
            ),
            ErrorEvent::SendFailed { peer: p, errno } => write!(
                f,
                "send to {} refused: {}",
                peer(p),
                std::io::Error::from_raw_os_error(*errno)
            ),
            ErrorEvent::SendGivenUp { peer: p, datagrams } => write!(
                f,
                "send to {} given up: the socket's buffer stayed full ({datagrams} datagram{})",
                peer(p),
                if *datagrams == 1 { "" } else { "s" }
            ),
            ErrorEvent::Other { peer: p, errno } => write!(
                f,
                "{}: {}",
                peer(p),
                std::io::Error::from_raw_os_error(*errno)
            ),
        }
    }
}

impl ErrorEvent {
    pub(crate) fn from_queued(e: QueuedError) -> Self {
        let (peer, mtu) = (e.peer, (e.info != 0).then_some(e.info));
        match e.errno {
            libc::ECONNREFUSED => ErrorEvent::ConnectionRefused { peer },
            // From the network: about a datagram that left.
            libc::EMSGSIZE
                if e.origin == libc::SO_EE_ORIGIN_ICMP || e.origin == libc::SO_EE_ORIGIN_ICMP6 =>
            {
                ErrorEvent::PacketTooBig { peer, mtu }
            }
            libc::EMSGSIZE => ErrorEvent::MessageTooLong { peer, mtu },
            libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EHOSTDOWN
            | libc::ENETDOWN
            | libc::EACCES => ErrorEvent::Unreachable {
                peer,
                errno: e.errno,
            },
            errno => ErrorEvent::Other { peer, errno },
        }
    }

    pub(crate) fn from_errno(errno: i32, peer: Option<SocketAddr>) -> Self {
        ErrorEvent::from_queued(QueuedError {
            errno,
            origin: 0,
            icmp_type: 0,
            icmp_code: 0,
            info: 0,
            peer,
        })
    }
}

/// Why a send was not queued. Nothing was queued and nothing will be
/// sent; every case but `NoSuchSocket` is counted in the engine's
/// [`crate::Stats`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The data does not fit in a send slot ([`crate::Config::slot_size`]),
    /// or, as one datagram, in a UDP datagram.
    TooLarge,
    /// Every send slot is in flight, or the send queue is full
    /// ([`crate::Config::max_queued_sends`]); counted in
    /// [`crate::Stats::send_exhausted`]. Try again after the worker loop has
    /// run (a timer, the next datagram).
    Exhausted,
    /// The worker has no socket with that index.
    NoSuchSocket,
    /// An IPv6 destination for an IPv4 socket (an IPv4 one on an IPv6
    /// socket goes as v4-mapped); counted in `send_errors` under
    /// `EAFNOSUPPORT`.
    AddressFamily,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TooLarge => f.write_str("datagram larger than a send slot"),
            SendError::Exhausted => f.write_str("all send slots are in flight"),
            SendError::NoSuchSocket => f.write_str("no socket with that index in this worker"),
            SendError::AddressFamily => f.write_str("an IPv6 destination for an IPv4 socket"),
        }
    }
}

impl std::error::Error for SendError {}

/// So that `?` works across the whole API in a function returning
/// `io::Result`: [`crate::Engine::start`] and [`crate::Sender`] already
/// give `io::Error`, a [`crate::StopError`] converts too. `Exhausted` is
/// `WouldBlock` (try again later), `TooLarge` and `AddressFamily` are
/// `InvalidInput`, `NoSuchSocket` is `NotFound`.
impl From<SendError> for std::io::Error {
    fn from(e: SendError) -> Self {
        let kind = match e {
            SendError::Exhausted => std::io::ErrorKind::WouldBlock,
            SendError::NoSuchSocket => std::io::ErrorKind::NotFound,
            SendError::TooLarge | SendError::AddressFamily => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}

/// Errors the kernel explains in the socket error queue (ICMP, and
/// `EMSGSIZE` with the path MTU).
pub(crate) fn is_icmp_errno(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNREFUSED
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EMSGSIZE
            | libc::EHOSTDOWN
    )
}

/// The same error again (`io::Error` is not `Clone`): the errno itself
/// when it is one, so that what reads it still can.
pub(crate) fn copy(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(errno) => std::io::Error::from_raw_os_error(errno),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::SendError;

    #[test]
    fn a_send_error_converts_to_an_io_error_of_its_kind() {
        fn queue(e: SendError) -> std::io::Result<()> {
            Err(e)?
        }
        let kinds: Vec<std::io::ErrorKind> = [
            SendError::Exhausted,
            SendError::TooLarge,
            SendError::NoSuchSocket,
            SendError::AddressFamily,
        ]
        .into_iter()
        .map(|e| queue(e).unwrap_err().kind())
        .collect();
        use std::io::ErrorKind::*;
        assert_eq!(kinds, [WouldBlock, InvalidInput, NotFound, InvalidInput]);
        let text = queue(SendError::Exhausted).unwrap_err().to_string();
        assert_eq!(text, "all send slots are in flight");
    }
}
