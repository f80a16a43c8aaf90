//! The `meshlite-bridge` command line. Errors go to stderr as `error: ...` with exit status 1
//! (2 for usage errors, from clap).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::service;

/// Meshlite central bridge: materializes the fleet's merged state into (Supabase) Postgres.
#[derive(Debug, Parser)]
#[command(name = "meshlite-bridge", version, about, long_about = None)]
pub struct Cli {
    /// TOML configuration file (every key but the database URL has a default; env overrides
    /// apply on top; see deploy/meshlite-bridge.example.toml).
    #[arg(long, global = true, env = "MESHLITE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (defaults, file, env) as TOML, password hidden, and exit.
    #[arg(long, global = true)]
    pub print_config: bool,

    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        value_enum,
        env = "MESHLITE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,

    /// The command.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Connect to Postgres, apply migrations, create or extend the materialized tables, then
    /// serve /healthz and /metrics on http.listen until SIGINT / SIGTERM. (Syncing with the
    /// mesh is not wired in yet: tables are created but not filled.)
    Run,
    /// Apply migrations and create or extend the materialized tables, then exit.
    Migrate {
        /// Print the SQL instead, without connecting: every migration and the table DDL as they
        /// would run on an empty database (all statements are idempotent).
        #[arg(long)]
        dry_run: bool,
    },
}

/// Parses the arguments and runs; the binary's whole `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let config = Config::load(cli.config.as_deref(), |k| std::env::var(k).ok())
        .map_err(|e| e.to_string())?;
    if cli.print_config {
        print!("{}", config.to_toml_redacted().map_err(|e| e.to_string())?);
        return Ok(());
    }
    let Some(command) = cli.command else {
        return Err("no command: use `meshlite-bridge run`, `migrate` or --help".into());
    };
    if let Command::Migrate { dry_run: true } = command {
        print!("{}", service::dry_run(&config).map_err(|e| e.to_string())?);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meshlite-bridge")
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        match command {
            Command::Run => service::run(config, shutdown_signal()).await,
            Command::Migrate { .. } => service::migrate(&config).await.map(|report| {
                println!(
                    "{}",
                    serde_json::json!({ "applied": report.applied, "ok": true })
                );
            }),
        }
        .map_err(|e| e.to_string())
    })
}

/// Completes on SIGINT or SIGTERM, watched from the call on (see
/// [`meshlite_mesh::tasks::shutdown_signal`]).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let signal = meshlite_mesh::tasks::shutdown_signal();
    async move {
        signal.await;
        tracing::info!("shutting down");
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHLITE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
