//! The send slot a handler builds a datagram in, in place
//! ([`crate::Transport::send_with`]).

/// A send slot lent to a handler to build a datagram (or a GSO train) in
/// place ([`crate::Transport::send_with`]): the bytes the kernel will
/// send, no copy between. It derefs to the whole capacity asked for; the closure
/// that builds in it returns how many of the first bytes it wrote, and
/// only those go out.
///
/// The bytes start as zero, with one exception the handler asks for: a
/// slot whose [`SendBuf::tag`] is not 0 holds what this worker's handler
/// left there when it set that tag (a load generator writes its payload
/// once per slot and then only its header). Nothing any other datagram
/// left in the slot is ever visible or sent.
pub struct SendBuf<'a> {
    pub(crate) bytes: &'a mut [u8],
    pub(crate) tag: u64,
}

impl SendBuf<'_> {
    /// What the handler that last built a datagram in this slot said its
    /// bytes are ([`SendBuf::set_tag`]); 0 when it said nothing (a fresh
    /// slot, or one a copying send wrote): then the bytes are all zero.
    pub fn tag(&self) -> u64 {
        self.tag
    }
    /// Says what these bytes are, for whoever gets this slot next (0:
    /// nothing to rely on). Left unchanged, the old tag stays: set it to 0
    /// when the bytes no longer match it.
    pub fn set_tag(&mut self, tag: u64) {
        self.tag = tag;
    }
}

impl std::ops::Deref for SendBuf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes
    }
}

impl std::ops::DerefMut for SendBuf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes
    }
}
