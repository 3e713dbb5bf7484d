//! The command line (INTERFACE.md): argument definitions and dispatch. Exit codes are part of
//! the contract: see each command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod client;
pub mod log;
pub mod state;

/// edgecap: durable event capture and MQTT forwarding for Pi-class devices.
#[derive(Debug, Parser)]
#[command(name = "edgecap", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (systemd ExecStart). Exit: 0 clean stop, 2 bad config, 1 fatal error.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Send events to a running daemon. Exit: 0 acked, 1 rejected, 3 daemon unreachable.
    Publish(client::PublishArgs),
    /// Daemon health. Exit: 0, 3 unreachable.
    Status {
        #[arg(long)]
        socket: PathBuf,
        /// Print the status object as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The event-sourced state rebuilt from the log. Exit: 0; 1 corruption.
    State {
        #[arg(long)]
        dir: PathBuf,
        /// State as it was after event N.
        #[arg(long, conflicts_with = "at")]
        at_seq: Option<u64>,
        /// State after the last event captured at or before this RFC 3339 time.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Read-only tools over a data directory, and the live follow subscription.
    Log {
        #[command(subcommand)]
        command: log::LogCommand,
    },
    /// The whole pipeline on this machine in about 30 s (embedded broker, outage included).
    #[cfg(feature = "demo")]
    Demo(crate::demo::DemoArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate a config, print the effective values. Exit: 0 ok, 2 invalid.
    Check { file: PathBuf },
}

/// Exit code: the daemon could not be reached.
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: invalid configuration / not a data directory.
pub const EXIT_INVALID: u8 = 2;

/// Sets up `tracing` to stderr, filtered by `EDGECAP_LOG` or `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = std::env::var("EDGECAP_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Runs a parsed command line.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => run_daemon(&config),
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match crate::config::Config::load(&file) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("edgecap: {}: {e}", file.display());
                ExitCode::from(EXIT_INVALID)
            }
        },
        Command::Publish(args) => client::publish(args),
        Command::Status { socket, json } => client::status(&socket, json),
        Command::Log { command } => log::main(command),
        Command::State {
            dir,
            at_seq,
            at,
            json,
        } => state::main(&dir, at_seq, at, json),
        #[cfg(feature = "demo")]
        Command::Demo(args) => crate::demo::main(args),
    }
}

fn run_daemon(path: &std::path::Path) -> ExitCode {
    // Logging first: warnings found while loading the config (a TLS key or password file
    // readable by every user) must reach the journal.
    init_tracing();
    let config = match crate::config::Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("edgecap: {}: {e}", path.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::limits::RUNTIME_WORKERS)
        .enable_all()
        .thread_name("edgecap-rt")
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("edgecap: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(crate::daemon::run(config, shutdown_signal()));
    // A part abandoned at the shutdown bound (a writer stuck in fdatasync) must not keep the
    // process alive: blocking threads get one second, then the process exits.
    runtime.shutdown_timeout(std::time::Duration::from_millis(
        crate::limits::RUNTIME_STOP_MS,
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("edgecap: fatal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("install SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
