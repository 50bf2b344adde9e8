//! `scheduler`: parses the configuration, builds the service and runs it until SIGINT/SIGTERM.

use clap::Parser;
use scheduler::{
    app::{Application, shutdown_signal},
    config::Config,
    telemetry,
};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    let telemetry = match telemetry::install(config.log_format) {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("Error: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = run(config).await;
    // The spans of the last requests, and of the shutdown, are sent before the process ends.
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .ok();
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // One line, the setting or step at fault first, then its causes.
            eprintln!("Error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let app = Application::build(config).await?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        trigger.cancel();
    });
    app.run(shutdown).await
}
