//! `comind`: bootstraps one environment of the Comind-Ops platform.
//!
//! This binary only parses arguments and renders; everything it does is a call into
//! the library crates (`comind-core`'s `Bootstrap` with the profile's providers), so
//! an embedder can do the same.

mod args;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;

/// Sends the libraries' diagnostics to stderr at the level `COMIND_LOG` names
/// (`error`, `warn`, `info`, `debug`, `trace`); without it they stay silent, because
/// everything a user needs is in the events and errors. Never logs secrets: the
/// libraries build their messages from names and ids only.
fn init_logging() -> Result<(), String> {
    let Ok(level) = std::env::var("COMIND_LOG") else {
        return Ok(());
    };
    let level: tracing::Level = level.parse().map_err(|_| {
        format!("COMIND_LOG=`{level}` is not a level: use error, warn, info, debug or trace")
    })?;
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init()
        .map_err(|e| format!("cannot start logging: {e}"))
}

fn main() -> ExitCode {
    let cli = args::Cli::parse();
    if let Err(problem) = init_logging() {
        eprintln!("error: {problem}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(commands::run(cli))
}
