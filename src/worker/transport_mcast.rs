//! [`Transport`]'s multicast and broadcast socket options: one
//! `setsockopt`/`getsockopt` each, on the worker's thread (see
//! [`crate::mcast`] for groups and interfaces).

use std::net::IpAddr;

use crate::sys::mcast;
use crate::sys::mcast::{Interface, McastError};
use crate::worker::ids::SocketRef;
use crate::worker::transport::Transport;

impl Transport<'_> {
    /// Joins multicast `group` on socket `sock` (any source).
    pub fn join_group(
        &mut self,
        sock: impl SocketRef,
        group: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let sock = sock.index();
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::membership(fd, self.core.v6(sock), group, &iface, true)
    }

    /// Leaves `group` on socket `sock`.
    pub fn leave_group(
        &mut self,
        sock: impl SocketRef,
        group: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let sock = sock.index();
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::membership(fd, self.core.v6(sock), group, &iface, false)
    }

    /// Joins (`group`, `source`): only `source`'s datagrams to `group` arrive
    /// (IPv4 `IP_ADD_SOURCE_MEMBERSHIP`, IPv6 `MCAST_JOIN_SOURCE_GROUP`).
    pub fn join_source_group(
        &mut self,
        sock: impl SocketRef,
        group: IpAddr,
        source: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let sock = sock.index();
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::source_membership(fd, self.core.v6(sock), group, source, &iface, true)
    }

    /// Leaves (`group`, `source`).
    pub fn leave_source_group(
        &mut self,
        sock: impl SocketRef,
        group: IpAddr,
        source: IpAddr,
        iface: Interface,
    ) -> Result<(), McastError> {
        let sock = sock.index();
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::source_membership(fd, self.core.v6(sock), group, source, &iface, false)
    }

    /// Sets the TTL (IPv4) or hop limit (IPv6) of multicast sent from `sock`.
    pub fn set_multicast_ttl(&mut self, sock: impl SocketRef, ttl: u32) -> std::io::Result<()> {
        let sock = sock.index();
        mcast::set_ttl(self.fd(sock)?, self.core.v6(sock), ttl)
    }

    /// The multicast TTL / hop limit the kernel holds for `sock`.
    pub fn multicast_ttl(&self, sock: impl SocketRef) -> std::io::Result<u32> {
        let sock = sock.index();
        mcast::ttl(self.fd(sock)?, self.core.v6(sock))
    }

    /// Whether this host hears the multicast `sock` sends.
    pub fn set_multicast_loop(&mut self, sock: impl SocketRef, on: bool) -> std::io::Result<()> {
        let sock = sock.index();
        mcast::set_loop(self.fd(sock)?, self.core.v6(sock), on)
    }

    /// The loopback setting the kernel holds for `sock`.
    pub fn multicast_loop(&self, sock: impl SocketRef) -> std::io::Result<bool> {
        let sock = sock.index();
        mcast::loop_enabled(self.fd(sock)?, self.core.v6(sock))
    }

    /// The interface multicast from `sock` leaves by.
    pub fn set_multicast_interface(
        &mut self,
        sock: impl SocketRef,
        iface: Interface,
    ) -> Result<(), McastError> {
        let sock = sock.index();
        let fd = self.fd(sock).map_err(McastError::Os)?;
        mcast::set_interface(fd, self.core.v6(sock), &iface)
    }

    /// The outgoing multicast interface the kernel holds for `sock`.
    pub fn multicast_interface(&self, sock: impl SocketRef) -> std::io::Result<Interface> {
        let sock = sock.index();
        mcast::interface(self.fd(sock)?, self.core.v6(sock))
    }

    /// `SO_BROADCAST` on `sock`.
    pub fn set_broadcast(&mut self, sock: impl SocketRef, on: bool) -> std::io::Result<()> {
        let sock = sock.index();
        mcast::set_broadcast(self.fd(sock)?, on)
    }

    /// Whether `sock` may send to broadcast addresses.
    pub fn broadcast(&self, sock: impl SocketRef) -> std::io::Result<bool> {
        let sock = sock.index();
        mcast::broadcast(self.fd(sock)?)
    }
}
