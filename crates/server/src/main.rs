//! `jetway-server`: loads the configuration, starts the local nats-server when `NATS_URL` is unset,
//! connects to NATS, serves until SIGTERM or SIGINT, and shuts down gracefully.
//! `jetway-server healthcheck` instead asks the server running on this host whether it is ready (see
//! [`jetway_server::infra::probe`]); `jetway-server openapi` prints the HTTP API's OpenAPI document
//! (what `/openapi.json` serves), for tools and CI's validator.

use std::process::ExitCode;

use jetway_core::{ConnectSettings, Nats};
use jetway_server::{
    app::{self, Listeners, Security},
    config::Config,
    infra::{
        probe,
        supervisor::{LocalNats, LocalNatsSettings},
        telemetry::Telemetry,
        tls::ServerTls,
    },
};
use tokio_util::sync::CancellationToken;

/// See the mimalloc entry in Cargo.toml: the event path allocates on one thread and frees on another.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(err) => {
            eprintln!("jetway-server: {err}");
            return ExitCode::from(2);
        }
    };
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("healthcheck") => return healthcheck(&config),
        Some("openapi") => return openapi(),
        Some(other) => {
            eprintln!(
                "jetway-server: unknown argument {other:?}; run it without arguments to serve, \
                 with `healthcheck` to probe the server running on this host, or with `openapi` \
                 to print the HTTP API's OpenAPI document"
            );
            return ExitCode::from(2);
        }
    }
    // Checked before anything starts: a bad certificate is a configuration error.
    let tls = match ServerTls::from_config(&config.tls) {
        Ok(tls) => tls,
        Err(err) => {
            eprintln!("jetway-server: {err}");
            return ExitCode::from(2);
        }
    };
    // Built by hand rather than with `#[tokio::main]`, so the configuration sets the thread count.
    // One thread means Tokio's current-thread scheduler: its run queue is a plain local queue, while
    // a work-stealing one, with nobody to steal from, still pays for synchronisation on every wake.
    let runtime = match config.worker_threads() {
        1 => tokio::runtime::Builder::new_current_thread(),
        threads => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
    }
    .enable_all()
    .build();
    match runtime {
        Ok(runtime) => runtime.block_on(start(config, tls)),
        Err(err) => {
            eprintln!("jetway-server: cannot start the async runtime: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Exit 0 when the server on this host answers `/readyz` with 200, else 1 with the reason on stderr.
fn healthcheck(config: &Config) -> ExitCode {
    match probe::check(probe::health_addr(config), config.tls.cert_file.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("jetway-server healthcheck: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Prints the HTTP API's OpenAPI document as JSON.
fn openapi() -> ExitCode {
    match jetway_server::http::openapi::document().to_pretty_json() {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("jetway-server openapi: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config, tls: Option<ServerTls>) -> ExitCode {
    let telemetry = match Telemetry::init(&config) {
        Ok(telemetry) => telemetry,
        Err(err) => {
            eprintln!("jetway-server: {err}");
            return ExitCode::from(2);
        }
    };
    config.log_summary();
    let result = run(config, tls).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, tls: Option<ServerTls>) -> Result<(), Box<dyn std::error::Error>> {
    let (url, local) = match &config.nats_url {
        Some(url) => (url.as_str().to_owned(), None),
        None => {
            let local = LocalNats::start(LocalNatsSettings::from_config(&config)).await?;
            (local.url().to_owned(), Some(local))
        }
    };
    let result = serve(&config, url, tls).await;
    if let Some(local) = local {
        local.stop().await;
    }
    result
}

async fn serve(
    config: &Config,
    url: String,
    tls: Option<ServerTls>,
) -> Result<(), Box<dyn std::error::Error>> {
    let settings = ConnectSettings {
        url,
        name: "jetway-server".into(),
        publish_max_pending: config.nats_publish_async_max_pending,
        security: config.nats_security.clone(),
    };
    let nats = Nats::connect(&settings).await?;
    tracing::info!("NATS client started");
    let security = Security::from_config(config)?;
    let listeners = Listeners::bind(config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let cors = config.http_cors.clone();
    app::serve(
        nats,
        listeners,
        config.limits,
        security,
        tls,
        cors,
        shutdown,
    )
    .await?;
    Ok(())
}

async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            tracing::error!(%err, "cannot listen for signals; stop the server with SIGKILL");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
