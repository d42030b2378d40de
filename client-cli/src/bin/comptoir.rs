//! `comptoir`: the customer command line (see `comptoir --help`).

fn main() -> std::process::ExitCode {
    comptoir_cli::main()
}
