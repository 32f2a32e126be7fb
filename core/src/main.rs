//! `weir-core`: parses arguments, sets up logging, and calls into the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
#[cfg(feature = "dev-certs")]
use weir_core::certs::{self, Role};
use weir_core::config::CoreConfig;

/// mimalloc, with large blocks from the system allocator: see `weir_core::alloc`.
#[global_allocator]
static ALLOCATOR: weir_core::alloc::Allocator = weir_core::alloc::Allocator;

#[derive(Parser)]
#[command(name = "weir-core", version, about = "Weir core node: ingest, Kafka, parsers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the core node until SIGINT/SIGTERM.
    Run {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
    /// Validate a config file (and environment overrides) and print the result.
    CheckConfig {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
    },
    /// Create a development CA and certificates for cores and edges (builds with the
    /// `dev-certs` feature only; others answer with how to get it).
    Certs {
        /// Directory for ca.pem/ca.key and NAME.pem/NAME.key; an existing CA there is reused.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        /// Core node names (certificates valid for NAME, localhost and 127.0.0.1).
        #[arg(long = "core", default_values = ["core-1"])]
        cores: Vec<String>,
        /// Edge node names (client certificates).
        #[arg(long = "edge", default_values = ["edge-1"])]
        edges: Vec<String>,
    },
    /// The cluster at a glance: nodes, partitions (owner, safe offset, truncation, Kafka's
    /// log start, digest lag) and segments by place, from Global and Kafka.
    Status {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        /// Print JSON (what `GET /api/v1/cluster` answers) instead of text.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Work with the Global metadata log.
    Global {
        #[command(subcommand)]
        command: GlobalCommand,
    },
    /// This node's segment files against Global.
    Segments {
        #[command(subcommand)]
        command: SegmentsCommand,
    },
    /// Rebuild the segments of a repository and time range from their raw text with
    /// another parser (or parser version) and swap them in Global in one command. Run it
    /// on the node that has the segment files.
    Reparse {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        repository: String,
        /// Start of the event-time range: ms since the epoch, RFC 3339, or a duration ago (24h).
        #[arg(long)]
        from: String,
        /// End of the event-time range (same forms, or `now`).
        #[arg(long, default_value = "now")]
        to: String,
        /// A parser configured in [parsers]; default: the repository's parser.
        #[arg(long)]
        parser: Option<String>,
        /// Seconds the replaced files stay on disk for queries that listed them before the swap.
        #[arg(long, default_value_t = 30)]
        grace_s: u64,
    },
    /// Work with parser plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum GlobalCommand {
    /// Read the Global topic from this node's snapshot (or offset 0) to its end and print
    /// the state as JSON. Writes nothing.
    Dump {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        /// Give up when the end is not reached within this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Record that an ingest partition's log starts at OFFSET: the records below are gone
    /// from Kafka and will never be stored (an accepted loss). The digest of a partition
    /// waiting on records Kafka no longer has resumes from there. Audited: the reason and
    /// this node's name stay in Global.
    SetLogStart {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        partition: u32,
        #[arg(long)]
        offset: u64,
        /// Why (kept in Global), e.g. "records 0..3 deleted by retention during the outage of 2026-12-01".
        #[arg(long)]
        reason: String,
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
}

#[derive(Subcommand)]
enum SegmentsCommand {
    /// Every segment Global knows, and whether this node has its file.
    Ls {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Checks every local segment file: registered in Global, the registered blake3, and
    /// every row group readable. Names each bad file; exits non-zero if there is one.
    Verify {
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: PathBuf,
        #[arg(long, default_value_t = 60)]
        timeout_s: u64,
    },
    /// Prints the events of a segment file (a path, or a segment id in this node's
    /// segments directory) as NDJSON.
    Cat {
        segment: String,
        /// Needed when SEGMENT is an id.
        #[arg(long, short, env = "WEIR_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Parse lines from stdin with PLUGIN and write the events as JSON lines (errors
    /// included); a summary goes to stderr.
    Test {
        /// The plugin component (.wasm).
        plugin: PathBuf,
        /// TOML with the plugin's settings, e.g. `settings = { pattern = '...' }`.
        #[arg(long)]
        config: Option<PathBuf>,
        /// JSON lines the events must equal (one per event, as this command prints them);
        /// exits non-zero at the first difference.
        #[arg(long)]
        expect: Option<PathBuf>,
    },
    /// Write a new parser plugin project, DIR/NAME, that builds outside Weir's repository:
    /// the parser, its test input and expected events, and a README with the build command.
    New {
        /// The plugin's name: lowercase letters, digits and `-`.
        name: String,
        /// rust, python or js.
        #[arg(long)]
        lang: weir_plugin_host::scaffold::Lang,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
}

/// `weir-core certs` asked of a build without the dev PKI. The subcommand stays in the CLI
/// either way, so that it answers with how to get it rather than "unknown command".
#[cfg(not(feature = "dev-certs"))]
#[derive(Debug, thiserror::Error)]
#[error(
    "this weir-core was built without the development PKI: `weir-core certs` needs the `dev-certs` feature \
     (cargo build --features weir-core/dev-certs); production nodes use certificates from your own CA"
)]
struct DevCertsNotBuilt;

fn main() -> ExitCode {
    weir_node::process::init_logging();
    weir_node::process::exit_code(dispatch(Cli::parse()))
}

fn segments(command: SegmentsCommand) -> anyhow::Result<()> {
    use weir_core::store::{DataDir, tools as segments};
    let global = |config: &CoreConfig, timeout_s| {
        weir_core::cluster::global_log::dump(config, std::time::Duration::from_secs(timeout_s)).map(|snapshot| snapshot.state)
    };
    let mut stdout = std::io::stdout().lock();
    match command {
        SegmentsCommand::Ls { config, timeout_s } => {
            let config = CoreConfig::load(&config)?;
            segments::list(&global(&config, timeout_s)?, &DataDir::new(&config.data_dir), &mut stdout)?;
        }
        SegmentsCommand::Verify { config, timeout_s } => {
            let config = CoreConfig::load(&config)?;
            let state = global(&config, timeout_s)?;
            let files = DataDir::new(&config.data_dir).segment_files().context("cannot list the segments directory")?;
            let mut bad = 0;
            for (i, path) in files.iter().enumerate() {
                let checked = segments::check(&state, path);
                match &checked.problem {
                    None => writeln!(stdout, "ok   {}", checked.segment_id)?,
                    Some(problem) => {
                        bad += 1;
                        writeln!(stdout, "BAD  {} ({}): {problem}", checked.segment_id, path.display())?;
                    }
                }
                if (i + 1) % 100 == 0 {
                    eprintln!("verified {} of {} segment files", i + 1, files.len());
                }
            }
            if bad > 0 {
                anyhow::bail!("{bad} of {} segment files failed verification; fetch another copy or re-digest their offsets", files.len());
            }
            eprintln!("{} segment files verified", files.len());
        }
        SegmentsCommand::Cat { segment, config } => {
            let path = if std::path::Path::new(&segment).is_file() {
                PathBuf::from(&segment)
            } else {
                let config = config.context("SEGMENT is not a file; give --config to find a segment id in the node's data directory")?;
                let config = CoreConfig::load(&config)?;
                DataDir::new(&config.data_dir).segment_path(&segment)
            };
            let n = segments::cat(&path, &mut stdout).map_err(anyhow::Error::msg)?;
            eprintln!("{n} events");
        }
    }
    Ok(())
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let config = CoreConfig::load(&config)?;
            weir_node::process::run_until_signal(|shutdown| weir_core::run(config, shutdown))
                .context("cannot start the tokio runtime")??;
            Ok(())
        }
        Command::CheckConfig { config } => {
            let config = CoreConfig::load(&config)?;
            println!("{config:#?}");
            Ok(())
        }
        Command::Global { command: GlobalCommand::Dump { config, timeout_s } } => {
            let config = CoreConfig::load(&config)?;
            let snapshot = weir_core::cluster::global_log::dump(&config, std::time::Duration::from_secs(timeout_s))?;
            println!("{}", serde_json::to_string_pretty(&snapshot).context("cannot encode the state")?);
            Ok(())
        }
        Command::Global {
            command:
                GlobalCommand::SetLogStart {
                    config,
                    partition,
                    offset,
                    reason,
                    timeout_s,
                },
        } => {
            let config = CoreConfig::load(&config)?;
            let command = weir_global::Command::new(
                format!(
                    "log-start:{partition}:{offset}:{}",
                    weir_core::cluster::commands::attempt()
                ),
                format!("{}-operator", config.node_id),
                weir_global::Cmd::SetLogStart {
                    partition,
                    offset,
                    reason,
                },
            );
            let runtime =
                tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            let timeout = std::time::Duration::from_secs(timeout_s);
            match runtime.block_on(weir_core::cluster::global_log::submit_as_tool(
                &config, &command, timeout,
            ))? {
                weir_global::Outcome::Applied => {
                    println!("partition {partition}: log start set to {offset}");
                    Ok(())
                }
                weir_global::Outcome::Rejected { reason } => {
                    Err(anyhow::anyhow!("Global refused it: {reason}"))
                }
            }
        }
        Command::Status { config, json, timeout_s } => {
            let config = CoreConfig::load(&config)?;
            let snapshot = weir_core::cluster::global_log::dump(&config, std::time::Duration::from_secs(timeout_s))?;
            let watermarks = weir_core::kafka::ingest_reader::watermarks(&config.kafka);
            let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let status = weir_core::cluster::status::status(&snapshot.state, &config.node_id, now_ms, config.digest.node_timeout_ms, watermarks);
            if json {
                println!("{}", serde_json::to_string_pretty(&status).context("cannot encode the status")?);
            } else {
                print!("{}", weir_core::cluster::status::render(&status));
            }
            Ok(())
        }
        Command::Segments { command } => segments(command),
        Command::Reparse { config, repository, from, to, parser, grace_s } => {
            let config = CoreConfig::load(&config)?;
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            let request = weir_core::store::reparse::Request {
                repository,
                from_ms: weir_core::store::reparse::parse_time(&from, now).map_err(anyhow::Error::msg)?,
                to_ms: weir_core::store::reparse::parse_time(&to, now).map_err(anyhow::Error::msg)?,
                parser,
                grace: std::time::Duration::from_secs(grace_s),
            };
            let runtime = tokio::runtime::Runtime::new().context("cannot start the tokio runtime")?;
            let summary = runtime.block_on(weir_core::store::reparse::run(&config, &request, |line| eprintln!("{line}")))?;
            println!("{}", serde_json::json!({"old": summary.old, "new": summary.new, "reparsed_events": summary.reparsed_events, "failed_events": summary.failed_events}));
            Ok(())
        }
        Command::Plugin { command: PluginCommand::Test { plugin, config, expect } } => {
            let stdin = std::io::stdin().lock();
            let stdout = std::io::BufWriter::new(std::io::stdout().lock());
            match expect {
                Some(expect) => weir_plugin_host::plugin_test_expect(&plugin, config.as_deref(), stdin, &expect, stdout, std::io::stderr())?,
                None => weir_plugin_host::plugin_test(&plugin, config.as_deref(), stdin, stdout, std::io::stderr())?,
            };
            Ok(())
        }
        Command::Plugin { command: PluginCommand::New { name, lang, dir } } => {
            let project = weir_plugin_host::scaffold::new_plugin(&name, lang, &dir)?;
            println!("wrote {}; build it there with `{}` (README.md has the test command)", project.dir.display(), project.build);
            Ok(())
        }
        #[cfg(not(feature = "dev-certs"))]
        Command::Certs { .. } => Err(DevCertsNotBuilt.into()),
        #[cfg(feature = "dev-certs")]
        Command::Certs { dir, cores, edges } => {
            let nodes: Vec<(String, Role)> = cores
                .into_iter()
                .map(|n| (n, Role::Core))
                .chain(edges.into_iter().map(|n| (n, Role::Edge)))
                .collect();
            for path in certs::generate(&dir, &nodes)? {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}
