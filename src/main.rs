//! `scheduler`: parses the configuration, builds the service and runs it until SIGINT/SIGTERM.

use clap::Parser;
use scheduler::{
    app::{Application, shutdown_signal},
    config::Config,
    telemetry,
};
use tokio_util::sync::CancellationToken;

fn main() -> std::process::ExitCode {
    few_malloc_arenas();
    serve()
}

/// Caps glibc's malloc at four arenas, before the runtime starts its threads, unless the operator
/// chose a number in `MALLOC_ARENA_MAX`. By default glibc gives each thread that meets contention
/// an arena of its own (up to eight per core), and memory freed after a burst (a page of big
/// jobs, a batch of fires) stays scattered over them: with four arenas the same work peaks at 70
/// to 78 MiB instead of 75 to 102 MiB. Two would hold it at about 67 MiB, but the threads then
/// wait on each other's allocations: a REST create costs about 69 µs of CPU instead of 58.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn few_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: `mallopt` only sets a tunable of the allocator; it is called before any other
        // thread of this process exists, so no allocation runs beside it.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn few_malloc_arenas() {}

#[tokio::main]
async fn serve() -> std::process::ExitCode {
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
