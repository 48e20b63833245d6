//! The `drctl` binary: parse arguments, call the library, render results.
//! Everything of substance lives in the library (`src/lib.rs`).

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
