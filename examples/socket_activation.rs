//! An echo on sockets it is handed: by systemd's socket activation (a
//! `.socket` unit with `ListenDatagram=`), by `systemd-socket-activate -d`,
//! or by any parent that follows the protocol (`LISTEN_PID`, `LISTEN_FDS`,
//! descriptors from 3). Without them it binds one of its own, the address
//! given (127.0.0.1:0 by default), and serves that the same way.
//!
//! ```text
//! systemd-socket-activate -d -l 127.0.0.1:9000 target/release/examples/socket_activation
//! ```
//!
//! One worker per socket handed in; the engine applies its own options
//! (GRO, buffers, the guard) to them and owns them from then on.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::OwnedFd;

use udpring::{Config, Datagram, Engine, Handler, Transport};

struct Echo;

impl Handler for Echo {
    fn on_datagram(&mut self, d: Datagram<'_>, tx: &mut Transport<'_>) {
        let _ = tx.reply(d);
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: the first thing this program does; nothing else in it has
    // touched descriptors 3 and up.
    let mut sockets: Vec<OwnedFd> = unsafe { udpring::os::listen_fds()? };
    let handed = sockets.len();
    if sockets.is_empty() {
        let bind: SocketAddr = std::env::args()
            .nth(1)
            .as_deref()
            .unwrap_or("127.0.0.1:0")
            .parse()?;
        sockets.push(UdpSocket::bind(bind)?.into());
    }
    udpring::signals::install()?;
    // Workers 0: one per socket.
    let mut cfg = Config::new("127.0.0.1:0".parse()?);
    cfg.workers = 0;
    let engine = Engine::start_on(cfg, sockets, |_| Echo)?;
    let addrs: Vec<String> = engine.local_addrs().iter().map(|a| a.to_string()).collect();
    println!(
        "socket_activation: listening on {} ({handed} handed in)",
        addrs.join(" ")
    );
    udpring::signals::wait(None); // asleep until SIGINT/SIGTERM
    let s = engine.stop()?;
    println!(
        "socket_activation: {} echoed, {} slots out",
        s.sent, s.slots_out
    );
    Ok(())
}
