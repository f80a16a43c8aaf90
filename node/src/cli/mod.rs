//! The `meshlite` command line.
//!
//! Every command prints JSON on stdout (one object per line for lists) and reports errors on
//! stderr as `error: ...` with exit status 1 (2 for usage errors). Store commands open the data
//! directory directly; the store's directory lock refuses a second process while `meshlite run`
//! owns it, and then `summary` and `bundle export|import` ask the daemon over HTTP instead
//! ([`remote`]).

mod backup;
mod bundle;
mod daemon;
mod data;
mod keys;
mod output;
mod remote;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use output::CliError;

/// Meshlite: an embedded-first offline store with CRDT sync.
#[derive(Debug, Parser)]
#[command(name = "meshlite", version, about, long_about = None)]
pub struct Cli {
    /// Data directory of the local store [default: ./meshlite-data].
    #[arg(long, global = true, env = "MESHLITE_DATA")]
    pub data: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "MESHLITE_LOG_FORMAT",
        default_value = "human"
    )]
    pub log_format: LogFormat,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node daemon: the store, the HTTP listener and, when configured, the mesh (QUIC
    /// peers found by mDNS, Tailscale and static lists) and NATS. With no configuration it runs
    /// standalone on its embedded default. Stops cleanly on SIGINT / SIGTERM.
    #[command(after_help = crate::config::env_help())]
    Run {
        /// TOML configuration file (every key has a default; env overrides apply on top).
        #[arg(long, env = "MESHLITE_CONFIG")]
        config: Option<PathBuf>,
        /// Print the effective configuration (defaults, file, env) as TOML and exit.
        #[arg(long)]
        print_config: bool,
    },
    /// Fleet identity: create a CA, issue and renew node certificates.
    #[command(subcommand)]
    Fleet(daemon::FleetCommand),
    /// Print the running daemon's peer table, one JSON object per line.
    Peers {
        /// The daemon's HTTP listener.
        #[arg(long, env = "MESHLITE_HTTP_LISTEN", default_value = "127.0.0.1:8100")]
        http: SocketAddr,
    },
    /// Create the store (if missing) and install or upgrade its schema.
    Init {
        /// A TOML schema file (see fixtures/schemas/pmoves.toml). Without it the store is
        /// schemaless: any collection name, every field last-writer-wins.
        #[arg(long)]
        schema: Option<PathBuf>,
    },
    /// Insert or update a document record (fields absent from JSON are left alone); prints the
    /// merged record.
    Put {
        /// Collection name.
        collection: String,
        /// The record as a JSON object, or `-` to read it from stdin.
        json: String,
        /// Re-create a deleted record (starts a new incarnation; a delete otherwise wins forever).
        #[arg(long)]
        recreate: bool,
    },
    /// Print one record.
    Get {
        /// Collection name.
        collection: String,
        /// Record id.
        id: String,
    },
    /// Delete a document record (a tombstone that beats concurrent updates).
    Delete {
        /// Collection name.
        collection: String,
        /// Record id.
        id: String,
    },
    /// Add N (may be negative) to a counter field; prints the merged record.
    Incr {
        /// Collection name.
        collection: String,
        /// Record id.
        id: String,
        /// Field name.
        field: String,
        /// Amount to add.
        #[arg(allow_hyphen_values = true)]
        n: i64,
    },
    /// Append an immutable row to a log collection; prints the row.
    Append {
        /// Collection name.
        collection: String,
        /// The row as a JSON object, or `-` to read it from stdin.
        json: String,
    },
    /// Print matching records, one JSON object per line.
    Query(data::QueryArgs),
    /// Print this replica's summary (what it holds, per origin).
    Summary,
    /// Print counts, origins, summary and schema version.
    Status,
    /// Sneakernet sync through bundle files.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Print an anon and a service_role key (HS256 JWTs) for a JWT secret, as JSON.
    Keys(keys::KeysArgs),
    /// Copy the store to FILE (consistent while `meshlite run` serves writes).
    Backup {
        /// The new backup file (never overwritten).
        file: PathBuf,
    },
    /// Restore a backup FILE into the empty --data directory, under a new replica id.
    Restore {
        /// The backup file.
        file: PathBuf,
        /// Keep the backed-up replica id: only when the backed-up device is gone for good and
        /// nothing it wrote after the backup reached another node (see deploy/RUNBOOK.md).
        #[arg(long)]
        same_origin: bool,
    },
}

/// The data directory when neither `--data` nor `MESHLITE_DATA` is given.
pub const DEFAULT_DATA_DIR: &str = "./meshlite-data";

/// Parses the command line, runs the command and maps errors to an exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Run { .. }) {
        "info"
    } else {
        "warn"
    };
    init_logging(cli.log_format, default_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let dir = cli
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let data = dir.as_path();
    match cli.command {
        Command::Run {
            config,
            print_config,
        } => daemon::run(cli.data.as_deref(), config.as_deref(), print_config),
        Command::Fleet(cmd) => daemon::fleet(cmd),
        Command::Peers { http } => daemon::peers(http),
        Command::Init { schema } => data::init(data, schema.as_deref()),
        Command::Put {
            collection,
            json,
            recreate,
        } => data::put(data, &collection, &json, recreate),
        Command::Get { collection, id } => data::get(data, &collection, &id),
        Command::Delete { collection, id } => data::delete(data, &collection, &id),
        Command::Incr {
            collection,
            id,
            field,
            n,
        } => data::incr(data, &collection, &id, &field, n),
        Command::Append { collection, json } => data::append(data, &collection, &json),
        Command::Query(args) => data::query(data, &args),
        Command::Summary => data::summary(data),
        Command::Status => data::status(data),
        Command::Bundle(cmd) => bundle::run(data, cmd),
        Command::Keys(args) => keys::run(&args),
        Command::Backup { file } => backup::backup(data, &file),
        Command::Restore { file, same_origin } => backup::restore(data, &file, same_origin),
    }
}

/// The log filter: `MESHLITE_LOG` or the default level, with two dependencies held back to
/// warnings unless the filter names them:
/// - the NATS client's own per-attempt lines (`event: client error: IO error`): the node logs
///   connection trouble itself, with the URL and the cause (`meshlite_mesh::nats::connlog`);
/// - Automerge, whose `#[instrument]` spans are at INFO: at the default level every document
///   load and change encoding opened a span and formatted its fields, ~5% of the daemon's CPU
///   on single-row writes (issue 13), for spans no event of ours is ever inside.
fn log_directives(env: Option<&str>, default_level: &str) -> String {
    let base = env
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or(default_level);
    let mut out = base.to_owned();
    for quiet in ["async_nats", "automerge"] {
        if !base.contains(quiet) {
            out.push_str(&format!(",{quiet}=warn"));
        }
    }
    out
}

fn init_logging(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::new(log_directives(
        std::env::var("MESHLITE_LOG").ok().as_deref(),
        default_level,
    ));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::log_directives;

    #[test]
    fn noisy_dependencies_are_held_back_unless_named() {
        assert_eq!(
            log_directives(None, "info"),
            "info,async_nats=warn,automerge=warn"
        );
        assert_eq!(
            log_directives(Some(" debug,automerge=trace "), "info"),
            "debug,automerge=trace,async_nats=warn"
        );
        assert_eq!(
            log_directives(Some("async_nats=debug"), "info"),
            "async_nats=debug,automerge=warn"
        );
    }
}
