//! The operator commands of the `weir-core` and `weir-edge` binaries (`segments`,
//! `reparse`, `global dump`, `dead-letter`, ...), run as an operator would: a real process
//! with `--config` last, logging at `info` to its stderr.

use std::path::Path;
use std::process::Command;

/// Runs `BINARY ARGS CONFIG` (ARGS end in `--config`), blocking: (success, stdout,
/// stderr). `WEIR_CONFIG` is not passed on, so only `config` counts.
pub fn run(binary: &str, args: &[&str], config: &Path) -> (bool, String, String) {
    let output = Command::new(crate::nodes::binary(binary))
        .args(args)
        .arg(config)
        .env_remove("WEIR_CONFIG")
        .env("WEIR_LOG", "info")
        .output()
        .unwrap_or_else(|e| panic!("run {binary} {args:?}: {e}"));
    (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs `weir-core ARGS CONFIG` off the runtime's threads: (success, stdout, stderr).
pub async fn weir_core(args: &[&str], config: &Path) -> (bool, String, String) {
    let (args, config): (Vec<String>, std::path::PathBuf) = (args.iter().map(|a| a.to_string()).collect(), config.to_owned());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run("weir-core", &args, &config)
    })
    .await
    .expect("weir-core command task")
}

/// Runs `weir-edge ARGS CONFIG`, which must succeed; returns its stdout and stderr.
pub fn weir_edge(args: &[&str], config: &Path) -> String {
    let (ok, stdout, stderr) = run("weir-edge", args, config);
    let text = format!("{stdout}{stderr}");
    assert!(ok, "weir-edge {args:?} failed:\n{text}");
    text
}
