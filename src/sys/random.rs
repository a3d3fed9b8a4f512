//! Unpredictable numbers from the kernel (`getrandom(2)`), for run tokens
//! and request IDs that a stranger on the network must not guess.

use std::io;

/// Fills `buf` from the kernel's random pool (blocking only until the pool
/// is initialised at boot).
pub fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // getrandom(buf, buflen, flags): "fills the buffer pointed to by buf
        // with up to buflen random bytes"; may return fewer, or EINTR.
        match syscall!(getrandom(rest.as_mut_ptr().cast(), rest.len(), 0)) {
            Ok(n) => done += n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A random 64-bit number; never 0 (so it can mark "set").
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    if fill(&mut b).is_err() {
        // getrandom exists on every kernel the engine runs on (3.17+);
        // should it fail, /dev/urandom is the same pool.
        use std::io::Read;
        let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    }
    let mut v = u64::from_ne_bytes(b);
    if v == 0 {
        // No kernel randomness at all: the clock and the pid, mixed
        // (splitmix64). Guessable; better than a constant.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut z = (t ^ (u64::from(std::process::id()) << 32)).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        v = (z ^ (z >> 31)) | 1;
    }
    v
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_differ() {
        let a: Vec<u64> = (0..64).map(|_| super::u64()).collect();
        let mut b = a.clone();
        b.sort_unstable();
        b.dedup();
        assert_eq!(a.len(), b.len(), "64 random u64s, no repeats");
        assert!(a.iter().all(|&v| v != 0));
    }
}
