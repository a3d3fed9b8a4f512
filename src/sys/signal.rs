//! Clean stops for command-line programs: SIGINT, SIGTERM and SIGHUP set a
//! flag instead of killing the process.

use std::io;

static STOP_SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Makes SIGINT, SIGTERM and SIGHUP set a flag instead of killing the process, so a
/// command can stop its engine cleanly and print totals.
pub fn install_stop_signals() -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { sigaction(sig, &act) }.map_err(io::Error::from)?;
    }
    Ok(())
}

/// Asks for the same clean stop a signal asks for (a command whose output
/// went away stops as if interrupted).
pub fn request_stop() {
    STOP_SIGNALLED.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Whether SIGINT, SIGTERM or SIGHUP arrived since [`install_stop_signals`]
/// (or [`request_stop`] was called).
pub fn stop_signalled() -> bool {
    STOP_SIGNALLED.load(std::sync::atomic::Ordering::SeqCst)
}
