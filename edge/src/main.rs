//! `weir-edge`: parses arguments, sets up logging, and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir_edge::config::EdgeConfig;

#[derive(Parser)]
#[command(name = "weir-edge", version, about = "Weir edge node: spool and forward events to core nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the edge node until SIGINT/SIGTERM.
    Run {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file (and environment overrides) and print the result.
    CheckConfig {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    weir_proto::process::init_logging();
    weir_proto::process::exit_code(dispatch(Cli::parse()))
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let config = EdgeConfig::load(&config)?;
            weir_proto::process::run_until_signal(|shutdown| weir_edge::run(config, shutdown))
                .context("cannot start the tokio runtime")??;
            Ok(())
        }
        Command::CheckConfig { config } => {
            println!("{:#?}", EdgeConfig::load(&config)?);
            Ok(())
        }
    }
}
