//! What both binaries do around their `run`: one log style, and shutdown on SIGINT or
//! SIGTERM.

use tokio_util::sync::CancellationToken;

/// Logs to stderr; the filter comes from `WEIR_LOG` (e.g. `info`, `weir_edge=debug`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
}

/// Runs a node on a new multi-threaded runtime until it returns; SIGINT or SIGTERM cancel
/// the token it was given. The outer error is the runtime failing to start.
pub fn run_until_signal<Fut, E>(run: impl FnOnce(CancellationToken) -> Fut) -> std::io::Result<Result<(), E>>
where
    Fut: std::future::Future<Output = Result<(), E>>,
{
    let runtime = tokio::runtime::Runtime::new()?;
    Ok(runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(cancel_on_signal(shutdown.clone()));
        run(shutdown).await
    }))
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
pub async fn cancel_on_signal(shutdown: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops this node");
            let _ = tokio::signal::ctrl_c().await;
            shutdown.cancel();
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
    shutdown.cancel();
}
