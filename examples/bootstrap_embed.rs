//! Brings up the local profile from a program, following the event stream: what the
//! `comind` CLI does, as a library. Needs a Docker engine.
//!
//! `cargo run -p comind-examples --example bootstrap_embed -- [ENVIRONMENT]`

use comind_core::UpOptions;
use comind_core::config::{Config, LoadOptions, Origin, Override};
use comind_core::engine::RunOptions;
use comind_core::event::Event;

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    // The same layering as the CLI: defaults, ./comind.yaml, COMIND_* variables, then
    // our own override.
    let mut options = LoadOptions::from_process(None);
    if let Some(name) = std::env::args().nth(1) {
        options.overrides.push(Override {
            origin: Origin::Flag("argv[1]".into()),
            path: "environment".into(),
            value: name,
        });
    }
    let config = Config::load(&options)?;
    // The profile's providers, composed as the CLI composes them.
    let bootstrap = comind::bootstrap(config)?;

    let mut events = bootstrap.events().subscribe();
    let printer = tokio::spawn(async move {
        while let Some(record) = events.recv().await {
            match &record.event {
                Event::PhaseStarted { phase, .. } => println!("{phase}: started"),
                Event::PhaseProgress { phase, message, .. } => println!("{phase}: {message}"),
                Event::PhaseFinished { phase, changes, .. } => {
                    println!("{phase}: done, {} change(s)", changes.len())
                }
                Event::PhaseFailed { phase, error, .. } => println!("{phase}: failed: {error}"),
                Event::RunFinished { .. } => break,
                _ => {}
            }
        }
    });

    let report = bootstrap
        .up(&RunOptions::default(), &UpOptions::default())
        .await?;
    let _ = printer.await;
    println!("{}", report.summary.outcome);
    // Secrets print as <redacted> unless revealed on purpose.
    print!("{}", report.merged_outputs().to_env_lines(false));
    Ok(())
}
