//! What both binaries do around their `run`: one log style, and shutdown on SIGINT or
//! SIGTERM.

use tokio_util::sync::CancellationToken;

/// Logs to stderr; the filter comes from `WEIR_LOG` (e.g. `info`, `weir_edge=debug`).
/// Colours only on a terminal: log files and journald get plain text.
pub fn init_logging() {
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WEIR_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
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

/// What a binary's `main` returns: success, or the error with its causes on stderr.
pub fn exit_code<E>(result: Result<(), E>) -> std::process::ExitCode
where
    E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
{
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", describe(error.as_ref()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// An error with its causes, each cause only once: our error messages often already
/// quote their source, and printing the chain would repeat it.
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer: {0}")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("wrapper")]
    struct Wrapper(#[source] std::io::Error);

    #[test]
    fn causes_are_named_once() {
        let quoted = Outer(std::io::Error::other("disk gone"));
        assert_eq!(super::describe(&quoted), "outer: disk gone");
        let plain = Wrapper(std::io::Error::other("disk gone"));
        assert_eq!(super::describe(&plain), "wrapper: disk gone");
    }
}
