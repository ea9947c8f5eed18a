//! `comind`: bootstraps one environment of the Comind-Ops platform.
//!
//! This binary only parses arguments and renders; everything it does is a call into
//! the library crates (`comind-core`'s `Bootstrap` with the profile's providers), so
//! an embedder can do the same.

mod args;
mod commands;
mod profiles;
mod render;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = args::Cli::parse();
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
