//! `udpring`, the command: echo, bench, load, sink, report, pmtu, ping,
//! fanout, mcast and the C reference loops, on the `udpring` engine. The
//! binary is `src/main.rs`, which calls [`main`]; the rest is this
//! library, so that the command's tests and benches reach its parts. Not a
//! stable API: the engine is the crate `udpring`.
//!
//! - `common.rs`: exit codes, argument parsers, the option groups every
//!   command shares, the counter printers, output that survives a closed
//!   pipe;
//! - `echo.rs`, `bench.rs`, `load.rs` (load and report), `net.rs` (pmtu and
//!   ping), `mcast.rs`, `fanout.rs`, `sink.rs`, `reference.rs`: one module
//!   per command family;
//! - `apps/`: what the commands run: the handlers, the load generator, the
//!   probes and the C reference loops.

#[macro_use]
mod common;
pub mod apps;
mod bench;
mod echo;
mod fanout;
mod fleet;
pub mod fuzz;
mod histlog;
mod html;
mod input;
mod limits;
mod load;
mod mcast;
mod metrics;
mod net;
mod parse;

mod plot;
mod reference;
mod report;
mod serve;
mod sink;

mod verdict;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bench::BenchArgs;
use echo::EchoArgs;
use fanout::FanoutArgs;
use load::LoadArgs;
use mcast::McastCmd;
use net::{PingArgs, PmtuArgs};
use report::ReportArgs;
use sink::SinkArgs;

/// Zero-copy, high-throughput UDP engine for Linux (io_uring, recvmmsg, GSO/GRO).
#[derive(Parser)]
#[command(name = "udpring", version, propagate_version = true)]
#[command(after_help = "Examples:\n  \
    udpring bench                      # echo engine + flood on loopback, all backends\n  \
    udpring echo --bind 0.0.0.0:9000   # an echo server, one worker per CPU\n  \
    udpring echo --sockperf            # ... that sockperf's ping-pong client accepts\n  \
    udpring load 127.0.0.1:9000        # load it: 256 in flight, every reply accounted for\n  \
    udpring sink --bind 0.0.0.0:9001   # one-way: loss, reordering, jitter per sender...\n  \
    udpring load 127.0.0.1:9001 --match none --bitrate 100M   # ...of this\n\n\
    Exit codes (every subcommand):\n  \
    0  success\n  \
    1  the run failed its purpose (no replies at all, no responder, no path MTU found)\n     \
    or the system refused (a socket, a file); the result is still printed\n  \
    2  usage: a bad flag, address, size or file, one line on standard error\n\n\
    With --json, standard output holds the JSON document alone; banners, live\n\
    lines, warnings and hints go to standard error.\n\n\
    Environment: UDPRING_BACKEND=uring|mmsg|simple|xdp forces a backend.")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo every datagram back to its sender, from the receive buffer itself.
    Echo(EchoArgs),
    /// Measure echo throughput on loopback: an echo engine and a flood
    /// client in this process, for each backend and size; prints a table.
    Bench(BenchArgs),
    /// Send load to an echo server and account for every reply: rates,
    /// loss, reordering, duplicates, RTT percentiles.
    Load(Box<LoadArgs>),
    /// Receive one-way udpring traffic (`load --match none`, `mcast send`)
    /// and report per sender: loss, reordering, duplicates, RFC 3550
    /// jitter. Like iperf3's server.
    Sink(SinkArgs),
    /// Merge JSON results of `load --json` (from many processes or hosts)
    /// into one: counts and rates add up, histograms merge exactly.
    Report(ReportArgs),
    /// Find the path MTU to a host: by ICMP (like tracepath) and, where ICMP
    /// is filtered, by probes an echo server returns (RFC 8899 style).
    Pmtu(PmtuArgs),
    /// Request/response against an echo server (or, with --payload, any
    /// request/response service): request IDs, retransmission with
    /// exponential backoff, "server looks down" after the last attempt.
    Ping(PingArgs),
    /// Relay every datagram to several destinations (unicast or groups) from
    /// the receive buffer itself: application-level multicast, or bridging a
    /// group to other groups and hosts.
    Fanout(FanoutArgs),
    /// Multicast (and IPv4 broadcast): listen (with sequence checks), send,
    /// and ping-pong a group, with udpring's header or any program's
    /// payloads.
    #[command(subcommand)]
    Mcast(McastCmd),
    /// The kernel-level references: a sender and a sink making the system
    /// calls a C program would (send, sendmsg + UDP_SEGMENT, recvmmsg +
    /// GRO), for the "C limit" beside udpring's figures.
    #[command(subcommand)]
    Reference(reference::RefCmd),
    /// Print a shell completion script, e.g. `udpring completions bash >
    /// /etc/bash_completion.d/udpring` (zsh: a file `_udpring` in a
    /// directory of $fpath; fish: ~/.config/fish/completions/udpring.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `udpring man | man -l -`. With --dir,
    /// write udpring.1 and a page per subcommand (udpring-load.1, ...)
    /// into DIR instead (made if missing), e.g. /usr/local/share/man/man1.
    Man {
        /// Write every page into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// `udpring completions` and `udpring man`: generated from the parser's
/// own definitions, so they never drift from it.
fn generated(cmd: Cmd) -> Result<(), common::Failure> {
    use clap::CommandFactory;
    let mut out: Vec<u8> = Vec::new();
    match cmd {
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "udpring", &mut out);
        }
        Cmd::Man { dir: Some(dir) } => {
            // A file there: say so (create_dir_all would say "File exists").
            if dir.exists() && !dir.is_dir() {
                return Err(common::usage(format!(
                    "--dir {}: not a directory",
                    dir.display()
                )));
            }
            // Made if missing, as `install -D` would.
            std::fs::create_dir_all(&dir)
                .and_then(|_| clap_mangen::generate_to(Cli::command(), &dir))
                .map_err(|e| common::Failure {
                    code: 1,
                    msg: format!("{}: {e}", dir.display()),
                })?;
            return Ok(());
        }
        Cmd::Man { dir: None } => {
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(common::runtime)?;
        }
        _ => return Ok(()),
    }
    use std::io::Write;
    // A closed pipe (`udpring man | head`) is not an error worth a
    // message; a full disk is.
    if let Err(e) = std::io::stdout()
        .write_all(&out)
        .and_then(|_| std::io::stdout().flush())
    {
        common::stdout_error(&e);
    }
    Ok(())
}

/// Runs the command with the process's arguments; its exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                let _ = e.print();
                return ExitCode::from(2);
            }
            // One line: clap's first paragraph (which can list the missing
            // arguments on lines of their own), joined, without its own
            // "error: " prefix.
            let text = e.render().to_string();
            let para: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty() && !l.starts_with("Usage:"))
                .map(str::trim)
                .collect();
            let joined = para.join(" ");
            let first = joined.strip_prefix("error: ").unwrap_or(&joined);
            let first = if first.is_empty() {
                "invalid arguments"
            } else {
                first
            };
            note!("udpring: error: {first} (see '{} --help')", help_path());
            return ExitCode::from(2);
        }
    };
    raise_open_files_limit();
    let r = match cli.cmd {
        Cmd::Echo(a) => echo::run(a),
        Cmd::Sink(a) => sink::run(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::Load(a) => load::load(*a),
        Cmd::Report(a) => report::report(a),
        Cmd::Pmtu(a) => net::pmtu(a),
        Cmd::Ping(a) => net::ping(a),
        Cmd::Fanout(a) => fanout::fanout(a),
        Cmd::Mcast(c) => mcast::mcast(c),
        Cmd::Reference(c) => reference::reference(c),
        c @ (Cmd::Completions { .. } | Cmd::Man { .. }) => generated(c),
    };
    match r {
        // Output lost to a full disk: not a success (said as it happened).
        Ok(()) if common::stdout_failed() => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            note!("udpring: error: {}", f.msg);
            ExitCode::from(f.code)
        }
    }
}

/// Raises this process's soft limit on open files to its hard limit, as
/// Go programs do at start: a socket per flow (`load --flows 1024`) or per
/// worker and address needs more than the soft 1,024 many systems start
/// with, and nothing here uses `select()`, the reason that default exists.
/// Where it cannot, an engine that runs out says what to do.
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// `udpring`, or the subcommand the arguments name (`udpring mcast send`),
/// whose `--help` lists the options that subcommand takes.
fn help_path() -> String {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let mut path = String::from("udpring");
    for a in std::env::args().skip(1) {
        let Some(sub) = cmd.find_subcommand(&a).cloned() else {
            break;
        };
        path.push(' ');
        path.push_str(&a);
        cmd = sub;
    }
    path
}
