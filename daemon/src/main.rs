//! The `edgecap` binary: parse arguments, hand over to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    edgecap::cli::main(edgecap::cli::Cli::parse())
}
