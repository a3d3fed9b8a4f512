//! The subscription protocol of `udpring fanout --control` (documented in
//! the parent module): parsing a control datagram, and the tokens that
//! prove a subscriber can receive at the address it claims.
//!
//! A token is a keyed SipHash (the standard library's `RandomState`: a
//! key drawn at random per relay) of the subscriber's address, its
//! generation and the current time bucket; it is valid in its bucket and
//! the next, so it lives between one and two expiry periods. An address's
//! generation is 0 until it unsubscribes; `UNSUB` raises it, which revokes
//! every token minted for that address before (a fresh `SUB` gets a new
//! one). The relay keeps nothing per token, and per address only the
//! generations of addresses that unsubscribed within the last two buckets
//! (a bounded table, [`Generations`]): a stranger who sends `SUB` from
//! forged addresses makes it send one answer no longer than the request
//! and allocate nothing.
//!
//! The token proves that *someone* reads the claimed address, and another
//! relay's listening address is read by all that relay's subscribers: a
//! token sent there would be relayed to them. A udpring relay does not
//! relay what another udpring server sent (the server mark, see the
//! engine's guard), so a token sent to a udpring relay goes no further.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;

/// A first `SUB` (without a token) must be at least this long: its
/// answer (`TOKEN` and 16 hex digits) is shorter, so a forged `SUB`
/// cannot make the relay send more than it was sent.
pub const MIN_FIRST_SUB: usize = 32;
/// Longest control datagram read (longer ones are malformed).
pub const MAX_CONTROL: usize = 512;

/// A control datagram, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// `SUB` and padding: asks for a token.
    Hello,
    /// `SUB <token>`: subscribe, or refresh a subscription.
    Subscribe(u64),
    /// `UNSUB <token>`: leave.
    Unsubscribe(u64),
}

/// Why a control datagram was not acted on (each is counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a request of this protocol.
    Malformed,
    /// A first `SUB` shorter than [`MIN_FIRST_SUB`] bytes.
    TooShort,
}

/// Parses one control datagram: ASCII, one request, words separated by
/// spaces; a first `SUB` is padded with spaces (or anything after a
/// space) to [`MIN_FIRST_SUB`] bytes; a token is 16 hex digits.
pub fn parse(d: &[u8]) -> Result<Request, Refusal> {
    if d.len() > MAX_CONTROL {
        return Err(Refusal::Malformed);
    }
    let text = std::str::from_utf8(d).map_err(|_| Refusal::Malformed)?;
    let mut words = text.split(' ').filter(|w| !w.is_empty());
    let verb = words.next().ok_or(Refusal::Malformed)?;
    let token = |w: Option<&str>| -> Result<u64, Refusal> {
        let w = w
            .map(|w| w.trim_end_matches(['\r', '\n']))
            .ok_or(Refusal::Malformed)?;
        if w.len() != 16 {
            return Err(Refusal::Malformed);
        }
        u64::from_str_radix(w, 16).map_err(|_| Refusal::Malformed)
    };
    match verb.trim_end_matches(['\r', '\n']) {
        "SUB" => match words.next() {
            None if d.len() < MIN_FIRST_SUB => Err(Refusal::TooShort),
            None => Ok(Request::Hello),
            w => token(w).map(Request::Subscribe),
        },
        "UNSUB" => token(words.next()).map(Request::Unsubscribe),
        _ => Err(Refusal::Malformed),
    }
}

/// Mints and checks tokens (see the module doc).
pub struct Tokens {
    key: std::collections::hash_map::RandomState,
    bucket_s: u64,
}

impl Tokens {
    /// Tokens whose buckets last `bucket_s` seconds (at least 1).
    pub fn new(bucket_s: u64) -> Self {
        Tokens {
            key: std::collections::hash_map::RandomState::new(),
            bucket_s: bucket_s.max(1),
        }
    }

    fn mac(&self, who: SocketAddr, generation: u64, bucket: u64) -> u64 {
        let mut h = self.key.build_hasher();
        h.write(udpring::os::canonical(who).to_string().as_bytes());
        h.write_u64(generation);
        h.write_u64(bucket);
        h.finish()
    }

    /// The token for `who` of `generation` at `now_s` (seconds on any
    /// steady clock).
    pub fn mint(&self, who: SocketAddr, generation: u64, now_s: u64) -> u64 {
        self.mac(who, generation, now_s / self.bucket_s)
    }

    /// Whether `token` is `who`'s of `generation`, minted in this bucket
    /// or the last.
    pub fn check(&self, who: SocketAddr, generation: u64, token: u64, now_s: u64) -> bool {
        let b = now_s / self.bucket_s;
        token == self.mac(who, generation, b)
            || (b > 0 && token == self.mac(who, generation, b - 1))
    }

    /// Seconds a token lives at most: two buckets.
    pub fn lifetime_s(&self) -> u64 {
        2 * self.bucket_s
    }
}

/// The generation of each address that unsubscribed lately (see the module
/// doc): at most `max` addresses, each kept while a token of its old
/// generation could still be valid. Full, the oldest entry goes (counted
/// by the caller): its old tokens would be valid again until they expire.
#[derive(Clone, Debug, Default)]
pub struct Generations {
    by_addr: std::collections::HashMap<SocketAddr, (u64, u64)>,
    max: usize,
}

impl Generations {
    /// A table of at most `max` addresses.
    pub fn new(max: usize) -> Self {
        Generations {
            by_addr: std::collections::HashMap::new(),
            max: max.max(1),
        }
    }

    /// `who`'s generation (0 unless it unsubscribed lately).
    pub fn of(&self, who: SocketAddr) -> u64 {
        self.by_addr
            .get(&udpring::os::canonical(who))
            .map_or(0, |g| g.0)
    }

    /// Revokes `who`'s tokens at `now_s`: its generation goes up. Entries
    /// older than `lifetime_s` are forgotten first; returns whether a
    /// younger one had to go to make room.
    pub fn revoke(&mut self, who: SocketAddr, now_s: u64, lifetime_s: u64) -> bool {
        let who = udpring::os::canonical(who);
        let mut evicted = false;
        if !self.by_addr.contains_key(&who) && self.by_addr.len() >= self.max {
            self.by_addr
                .retain(|_, (_, at)| now_s.saturating_sub(*at) <= lifetime_s);
            if self.by_addr.len() >= self.max
                && let Some(oldest) = self.by_addr.iter().min_by_key(|e| e.1.1).map(|e| *e.0)
            {
                self.by_addr.remove(&oldest);
                evicted = true;
            }
        }
        let g = self.by_addr.entry(who).or_insert((0, now_s));
        *g = (g.0 + 1, now_s);
        evicted
    }

    /// Addresses held.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_three_requests_and_refuses_the_rest() {
        let pad = format!("SUB{}", " ".repeat(MIN_FIRST_SUB - 3));
        assert_eq!(parse(pad.as_bytes()), Ok(Request::Hello));
        assert_eq!(parse(b"SUB"), Err(Refusal::TooShort));
        assert_eq!(
            parse(b"SUB 00000000000000ff\n"),
            Ok(Request::Subscribe(255))
        );
        assert_eq!(
            parse(b"UNSUB ffffffffffffffff"),
            Ok(Request::Unsubscribe(u64::MAX))
        );
        for bad in [
            &b""[..],
            b"sub 00000000000000ff",
            b"SUB 123",
            b"SUB 00000000000000fg",
            b"UNSUB",
            b"\xff\xfe",
            b"HELLO there",
        ] {
            assert_eq!(parse(bad), Err(Refusal::Malformed), "{bad:?}");
        }
        assert_eq!(parse(&[b' '; MAX_CONTROL + 1]), Err(Refusal::Malformed));
    }

    #[test]
    fn a_token_is_for_one_address_and_two_buckets() {
        let t = Tokens::new(30);
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let k = t.mint(a, 0, 100);
        assert!(t.check(a, 0, k, 100));
        assert!(t.check(a, 0, k, 119), "the next bucket still takes it");
        assert!(!t.check(a, 0, k, 150), "two buckets on it has expired");
        assert!(!t.check(b, 0, k, 100), "another port's token differs");
        assert!(!t.check(a, 1, k, 100), "another generation's differs");
        // The same address as v4-mapped is the same subscriber.
        let m: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        assert!(t.check(m, 0, k, 100));
        assert_ne!(Tokens::new(30).mint(a, 0, 100), k, "each relay its own key");
    }

    #[test]
    fn revoking_raises_the_generation_and_the_table_stays_bounded() {
        let mut g = Generations::new(2);
        let a: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:4002".parse().unwrap();
        assert_eq!(g.of(a), 0);
        assert!(!g.revoke(a, 10, 60));
        assert!(!g.revoke(a, 11, 60));
        assert_eq!(g.of(a), 2);
        assert!(!g.revoke(b, 12, 60));
        assert!(
            g.revoke(c, 13, 60),
            "full of young entries: the oldest goes"
        );
        assert_eq!((g.of(a), g.of(b), g.of(c), g.len()), (0, 1, 1, 2));
        // Entries past the tokens' lifetime are forgotten before any other.
        assert!(!g.revoke(a, 100, 60));
        assert_eq!(g.len(), 1);
    }

    proptest! {
        /// Any bytes: a request or a refusal, never a panic; a hello only
        /// from a long enough datagram.
        #[test]
        fn any_datagram_parses_or_is_refused(d in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(Request::Hello) = parse(&d) {
                prop_assert!(d.len() >= MIN_FIRST_SUB);
            }
        }
    }
}
