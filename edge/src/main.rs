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
    /// Look at and check the disk spool.
    Spool {
        #[command(subcommand)]
        command: SpoolCommand,
    },
    /// Batches a core refused as unacceptable, set aside in the dead-letter directory.
    DeadLetter {
        #[command(subcommand)]
        command: DeadLetterCommand,
    },
}

#[derive(Subcommand)]
enum SpoolCommand {
    /// Segments, pending, acked and corrupt records. Read-only; safe while the edge runs
    /// (a record being written then may show as a torn tail).
    Inspect {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check every record; exits non-zero when something is broken and not repaired.
    /// The edge must be stopped (it holds the spool's lock).
    Fsck {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        /// Cut torn tails and move corrupt records to the dead-letter directory.
        #[arg(long)]
        repair: bool,
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
    weir_node::process::init_logging();
    weir_node::process::exit_code(dispatch(Cli::parse()))
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let config = EdgeConfig::load(&config)?;
            weir_node::process::run_until_signal(|shutdown| weir_edge::run(config, shutdown))
                .context("cannot start the tokio runtime")??;
            Ok(())
        }
        Command::CheckConfig { config } => {
            println!("{:#?}", EdgeConfig::load(&config)?);
            Ok(())
        }
        Command::Spool { command: SpoolCommand::Inspect { config, json } } => {
            let config = EdgeConfig::load(&config)?;
            let report = weir_edge::inspect_spool(&config)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_inspection(&report);
            }
            Ok(())
        }
        Command::Spool { command: SpoolCommand::Fsck { config, repair } } => {
            let config = EdgeConfig::load(&config)?;
            let report = weir_edge::fsck_spool(&config, repair)?;
            print_inspection(&report.before);
            if let Some(after) = &report.after {
                println!("\nrepair: {} corrupt records moved to {}; after the repair:", report.repaired, config.dead_letter_dir().display());
                print_inspection(after);
            }
            if report.is_clean() {
                eprintln!("spool {} is consistent", config.spool.dir.display());
                Ok(())
            } else if repair {
                anyhow::bail!("spool {} is still damaged after the repair, see above", config.spool.dir.display())
            } else {
                anyhow::bail!(
                    "spool {} has damaged records, see above; stop the edge and run `weir-edge spool fsck --repair` \
                     (or start the edge, which does the same) to move them to the dead-letter directory",
                    config.spool.dir.display()
                )
            }
        }
        Command::DeadLetter { command: DeadLetterCommand::List { config } } => {
            let config = EdgeConfig::load(&config)?;
            let letters = weir_edge::dead_letter::DeadLetters::new(config.dead_letter_dir()).list()?;
            for letter in &letters {
                let r = &letter.refusal;
                println!("{}\t{} events\t{:?} from {}: {}\t{}", r.batch_id, r.n_events, r.code, r.core, r.message, letter.json.display());
            }
            let corrupt = weir_edge::dead_letter::DeadLetters::new(config.dead_letter_dir()).list_corrupt()?;
            for (letter, bytes) in &corrupt {
                let seq = letter.seq.map_or_else(|| "seq unknown".to_owned(), |s| format!("seq {s}"));
                println!("corrupt\tsegment {} offset {}\t{seq}\t{}\t{} bytes\t{}", letter.segment, letter.offset, letter.detail, letter.bytes, bytes.display());
            }
            eprintln!(
                "{} dead letters and {} corrupt spool records in {}",
                letters.len(),
                corrupt.len(),
                config.dead_letter_dir().display()
            );
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

fn print_inspection(report: &weir_edge::spool::Inspection) {
    println!("spool {}", report.dir.display());
    println!("  incarnation     {}", report.incarnation.as_deref().unwrap_or("(none)"));
    println!("  seq reservation {}", report.seq_reservation.map_or_else(|| "(none)".to_owned(), |l| l.to_string()));
    println!(
        "  {} segments, {} records: {} pending ({} bytes), {} acked; {} corrupt",
        report.segments.len(),
        report.records,
        report.pending,
        report.pending_bytes,
        report.acked,
        report.corrupt.len()
    );
    for s in &report.segments {
        let mut line = format!(
            "  segment {:020}  {:>10} bytes  {:>6} records  {:>6} pending  {:>6} acked",
            s.base, s.bytes, s.records, s.pending, s.acked
        );
        if s.corrupt > 0 {
            line += &format!("  {} corrupt", s.corrupt);
        }
        if s.torn_tail_bytes > 0 {
            line += &format!("  torn tail {} bytes", s.torn_tail_bytes);
        }
        if s.damaged_ack_entries > 0 {
            line += &format!("  {} damaged ack entries", s.damaged_ack_entries);
        }
        println!("{line}");
    }
    for c in &report.corrupt {
        let state = if c.acked {
            "acked"
        } else if c.dead_lettered {
            "dead-lettered"
        } else {
            "NOT dead-lettered yet"
        };
        let seq = c.seq.map_or_else(|| "seq unknown".to_owned(), |s| format!("seq {s}"));
        println!("  corrupt record: segment {:020} offset {} ({} bytes, {seq}): {}; {state}", c.segment, c.offset, c.bytes, c.reason);
    }
    for problem in &report.problems {
        println!("  PROBLEM: {problem}");
    }
}
