//! A service written in async tasks: the engine as one stream of owned
//! datagrams per worker (`Engine::start_stream`), each served by a tokio
//! task that answers with the request upper-cased, from the address it was
//! sent to. The engine stays runtime-free (wakers only); any runtime can
//! drive `Incoming::recv`.
//!
//! Run: `cargo run --example async_stream -- 127.0.0.1:7300 2`.
//!
//! The price beside the handler API: a copy of each datagram into a
//! buffer of a bounded per-worker pool, and a hop between threads
//! (PERF.md has the figures).

use std::net::SocketAddr;

use udpring::{Config, Engine};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let bind: SocketAddr = args.next().as_deref().unwrap_or("127.0.0.1:0").parse()?;
    let workers: usize = args.next().as_deref().unwrap_or("1").parse()?;
    udpring::signals::install()?;
    let cfg = Config::builder(bind).workers(workers).build()?;
    let (engine, incoming) = Engine::start_stream(cfg, 1024)?;
    println!(
        "async_stream: listening on {} ({} workers)",
        engine.local_addr(),
        engine.workers()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()?;
    let tasks: Vec<_> = incoming
        .into_iter()
        .map(|mut inc| {
            rt.spawn(async move {
                let mut served = 0u64;
                while let Some(d) = inc.recv().await {
                    let answer = d.payload().to_ascii_uppercase();
                    // A full socket buffer is counted as not answered.
                    if inc.reply(&d, &answer).is_ok() {
                        served += 1;
                    }
                }
                (served, inc.dropped())
            })
        })
        .collect();
    udpring::signals::wait(None); // asleep until SIGINT/SIGTERM
    // Stopping the engine ends every stream, and with it every task.
    let s = engine.stop()?;
    let (mut served, mut dropped) = (0, 0);
    for t in tasks {
        let (a, d) = rt.block_on(t)?;
        served += a;
        dropped += d;
    }
    println!(
        "async_stream: {} received, {served} answered, {dropped} dropped (stream full)",
        s.received
    );
    Ok(())
}
