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
    /// Batches a core refused as unacceptable, set aside in the dead-letter directory.
    DeadLetter {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// List the dead letters: batch id, events, refusing core and its reason.
    List {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
    /// Append every dead letter to the spool again, to be forwarded once the edge runs.
    /// The edge must be stopped (it holds the spool's lock).
    Requeue {
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
        Command::DeadLetter { command: DeadLetterCommand::List { config } } => {
            let config = EdgeConfig::load(&config)?;
            let letters = weir_edge::dead_letter::DeadLetters::new(config.dead_letter_dir()).list()?;
            for letter in &letters {
                let r = &letter.refusal;
                println!("{}\t{} events\t{:?} from {}: {}\t{}", r.batch_id, r.n_events, r.code, r.core, r.message, letter.json.display());
            }
            eprintln!("{} dead letters in {}", letters.len(), config.dead_letter_dir().display());
            Ok(())
        }
        Command::DeadLetter { command: DeadLetterCommand::Requeue { config } } => {
            let config = EdgeConfig::load(&config)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the tokio runtime")?;
            let n = runtime.block_on(weir_edge::requeue_dead_letters(&config))?;
            eprintln!("requeued {n} dead letters into the spool {}; they are forwarded when the edge runs", config.spool.dir.display());
            Ok(())
        }
    }
}
