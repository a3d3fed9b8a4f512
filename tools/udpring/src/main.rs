//! `udpring`: the command-line tool. Run `udpring --help`.

fn main() -> std::process::ExitCode {
    udpring_cli::main()
}
