//! The files a user names (`--payload-file`, `--pcap`, `--dns-queries`,
//! `report`'s results and interval logs): read whole, bounded in size and
//! in time. A regular file, or a pipe: `<(ssh host cat result.json)`,
//! `/dev/stdin` (or `-`) fed by a pipe, a FIFO. Not a device: `/dev/zero`
//! is endless, and a terminal waits for typing.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Failure, usage};

/// How long a pipe may go without a byte (or a FIFO without a writer)
/// before its read gives up.
pub(crate) const PIPE_IDLE: Duration = Duration::from_secs(10);

/// Reads `f` whole, at most `max` bytes: a regular file, or a pipe read
/// until its writer closes it (giving up after [`PIPE_IDLE`] without a
/// byte, or at a stop); errors are usage errors naming the file.
pub(crate) fn read_bounded(f: &Path, max: u64) -> Result<Vec<u8>, Failure> {
    read_within(f, max, PIPE_IDLE)
}

fn read_within(f: &Path, max: u64, idle: Duration) -> Result<Vec<u8>, Failure> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    // `-` is standard input, as most tools take it.
    let stdin = f == Path::new("-");
    let shown = if stdin {
        "standard input (-)".to_string()
    } else {
        f.display().to_string()
    };
    let f = if stdin { Path::new("/dev/stdin") } else { f };
    let named = |e: &dyn std::fmt::Display| usage(format!("{shown}: {e}"));
    let too_long = || named(&format!("more than {max} bytes; at most {max} are read"));
    // Non-blocking: opening a FIFO with no writer must not wait.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(f)
        .map_err(|e| named(&e))?;
    let meta = file.metadata().map_err(|e| named(&e))?;
    let kind = meta.file_type();
    if meta.is_file() {
        if meta.len() > max {
            return Err(named(&format!(
                "{} bytes; at most {max} are read",
                meta.len()
            )));
        }
        let mut buf = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut buf)
            .map_err(|e| named(&e))?;
        return if buf.len() as u64 > max {
            Err(too_long())
        } else {
            Ok(buf)
        };
    }
    if !(kind.is_fifo() || kind.is_socket()) {
        return Err(named(
            &"not a regular file or a pipe (a device can be endless, a terminal waits)",
        ));
    }
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 << 10];
    let mut file = file;
    loop {
        match file.read(&mut chunk) {
            Ok(n) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.len() as u64 > max {
                    return Err(too_long());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return Err(named(&e)),
            // Nothing yet (WouldBlock), or 0: the writer closed it, or a
            // FIFO has had none yet, which the wait tells apart (POLLHUP
            // only after a writer).
            _ => {
                if !wait_readable(&file, idle, &named)? {
                    break;
                }
            }
        }
    }
    if buf.is_empty() {
        return Err(named(&"nothing came through this pipe"));
    }
    Ok(buf)
}

/// Waits until `file` (a pipe) has bytes (`true`) or its writer is gone
/// (`false`); an error after `idle` without either, or at a stop.
fn wait_readable(
    file: &std::fs::File,
    idle: Duration,
    named: &dyn Fn(&dyn std::fmt::Display) -> Failure,
) -> Result<bool, Failure> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let end = Instant::now() + idle;
    loop {
        if udpring::signals::requested() {
            return Err(named(&"stopped while waiting for this pipe"));
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(named(&format!(
                "nothing from this pipe for {} s (its writer stalled, or a FIFO has none)",
                idle.as_secs_f64()
            )));
        }
        // Slices of at most 100 ms, to see a stop.
        let slice = left.min(Duration::from_millis(100));
        let ms = PollTimeout::try_from(slice).unwrap_or(PollTimeout::ZERO);
        let mut p = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut p, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {
                let r = p[0].revents().unwrap_or(PollFlags::empty());
                if r.contains(PollFlags::POLLIN) {
                    return Ok(true);
                }
                if r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
                    return Ok(false);
                }
            }
            Err(e) => return Err(named(&e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    /// A pipe's reading end as a path (`/proc/self/fd/N`, as `<(cmd)`
    /// gives `/dev/fd/N`), and its writing end.
    fn pipe() -> (std::os::fd::OwnedFd, std::fs::File, std::path::PathBuf) {
        let (r, w) = nix::unistd::pipe().unwrap();
        let path = format!("/proc/self/fd/{}", r.as_raw_fd()).into();
        (r, std::fs::File::from(w), path)
    }

    fn said(r: Result<Vec<u8>, Failure>) -> String {
        match r {
            Err(f) => f.msg,
            Ok(b) => panic!("read {} bytes", b.len()),
        }
    }

    #[test]
    fn a_pipe_is_read_to_its_end() {
        let (_r, mut w, path) = pipe();
        let writer = std::thread::spawn(move || {
            for k in 0..3 {
                std::thread::sleep(Duration::from_millis(30));
                w.write_all(format!("line {k}\n").as_bytes()).unwrap();
            }
        });
        let got = read_within(&path, 1 << 20, Duration::from_secs(5))
            .unwrap_or_else(|f| panic!("{}", f.msg));
        writer.join().unwrap();
        assert_eq!(got, b"line 0\nline 1\nline 2\n");
    }

    #[test]
    fn a_pipe_is_bounded_in_size_and_in_time() {
        let (_r, mut w, path) = pipe();
        w.write_all(&[7u8; 100]).unwrap();
        drop(w);
        assert!(said(read_within(&path, 99, PIPE_IDLE)).contains("more than 99 bytes"));

        // A writer that holds it open and writes nothing.
        let (_r, w, path) = pipe();
        let start = Instant::now();
        let msg = said(read_within(&path, 1 << 20, Duration::from_millis(300)));
        assert!(msg.contains("nothing from this pipe for 0.3 s"), "{msg}");
        assert!(start.elapsed() < PIPE_IDLE, "gave up at its idle time");
        drop(w);

        // A writer that closes it without a byte.
        let (_r, w, path) = pipe();
        drop(w);
        let msg = said(read_within(&path, 1 << 20, PIPE_IDLE));
        assert!(msg.contains("nothing came through this pipe"), "{msg}");
    }

    #[test]
    fn a_fifo_waits_for_its_writer_within_the_idle_time() {
        let dir = std::env::temp_dir().join(format!("udpring-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success(), "mkfifo");
        // No writer yet: not an empty file, a wait, then an error.
        let msg = said(read_within(&fifo, 1 << 20, Duration::from_millis(200)));
        assert!(msg.contains("or a FIFO has none"), "{msg}");
        // A writer that comes after the reader opened it.
        let to = fifo.clone();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            std::fs::write(to, b"late").unwrap();
        });
        let got = read_within(&fifo, 1 << 20, Duration::from_secs(5))
            .unwrap_or_else(|f| panic!("{}", f.msg));
        writer.join().unwrap();
        assert_eq!(got, b"late");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn devices_are_refused() {
        let msg = said(read_bounded(Path::new("/dev/zero"), 1 << 20));
        assert!(msg.contains("not a regular file or a pipe"), "{msg}");
    }
}
