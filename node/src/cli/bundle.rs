//! `meshlite bundle export|import`: sneakernet sync through files, on the sync protocol's framing.
//!
//! Export cuts the bundle against the importer's summary (`--for`, the output of `meshlite
//! summary` on the other device) so it holds only what the other side lacks. Import verifies the
//! whole file first (magic, every frame and transaction, count, checksum) so a truncated or
//! corrupt bundle writes nothing, then applies it in batches; applying is idempotent, so importing
//! the same bundle twice is harmless. The work itself is [`crate::bundles`]; while a daemon holds
//! the data directory, both commands go through its HTTP API ([`super::remote`]).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use meshlite_core::Summary;
use meshlite_core::store::Store;

use super::output::{CliError, Context, print_json};
use super::remote::{self, Target, open_target};
use crate::bundles::{self, ImportError, Pass};

/// `meshlite bundle ...`
#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Write the changes another replica lacks (all changes without --for) to FILE.
    Export {
        /// The bundle file to write.
        file: PathBuf,
        /// The other replica's summary (from `meshlite summary`): export only what it lacks.
        #[arg(long = "for", value_name = "SUMMARY_FILE")]
        for_summary: Option<PathBuf>,
    },
    /// Apply a bundle written by `bundle export`.
    Import {
        /// The bundle file to read.
        file: PathBuf,
    },
}

pub(crate) fn run(dir: &Path, cmd: BundleCommand) -> Result<(), CliError> {
    let store = match open_target(dir)? {
        Target::Local(store) => store,
        Target::Daemon(addr) => return print_json(&via_daemon(addr, cmd)?),
    };
    let result = match cmd {
        BundleCommand::Export { file, for_summary } => {
            export(&store, &file, for_summary.as_deref())
        }
        BundleCommand::Import { file } => import(&store, &file),
    };
    store.close()?;
    result
}

fn via_daemon(
    addr: std::net::SocketAddr,
    cmd: BundleCommand,
) -> Result<serde_json::Value, CliError> {
    match cmd {
        BundleCommand::Export { file, for_summary } => {
            let theirs = match for_summary {
                Some(path) => {
                    // Checked here, so a wrong file gets the same message as without a daemon.
                    read_summary(&path)?;
                    Some(
                        std::fs::read(&path)
                            .context(|| format!("cannot read {}", path.display()))?,
                    )
                }
                None => None,
            };
            remote::export(addr, theirs, &file)
        }
        BundleCommand::Import { file } => remote::import(addr, &file),
    }
}

fn read_summary(path: &Path) -> Result<Summary, CliError> {
    let text =
        std::fs::read_to_string(path).context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).context(|| {
        format!(
            "{} is not a summary from `meshlite summary`",
            path.display()
        )
    })
}

fn export(store: &Store, file: &Path, for_summary: Option<&Path>) -> Result<(), CliError> {
    let theirs = for_summary.map(read_summary).transpose()?;
    let out = File::create(file).context(|| format!("cannot create {}", file.display()))?;
    let (out, done) = bundles::export(store, theirs.as_ref(), BufWriter::new(out))?;
    let bytes = durable(out, file)?;
    print_json(&serde_json::json!({
        "file": file, "txns": done.txns, "bytes": bytes, "pruned_ranges": done.pruned_ranges,
    }))
}

/// Flushes the finished bundle to disk (`fsync`) before success is reported, and returns its
/// size as written.
fn durable(out: BufWriter<File>, file: &Path) -> Result<u64, CliError> {
    let what = || format!("cannot write {} to disk", file.display());
    let f = out.into_inner().map_err(|e| e.into_error()).context(what)?;
    f.sync_all().context(what)?;
    Ok(f.metadata().context(what)?.len())
}

fn progress_bar(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>9} [{bar:30}] {bytes}/{total_bytes} {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_owned());
    bar
}

fn import(store: &Store, file: &Path) -> Result<(), CliError> {
    let total = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let verifying = progress_bar(total, "verifying");
    let applying = progress_bar(total, "applying");
    let open = || File::open(file).map(BufReader::new);
    let imported = bundles::import(store, open, |pass, bytes| match pass {
        Pass::Verify => verifying.set_position(bytes),
        Pass::Apply => {
            verifying.finish_and_clear();
            applying.set_position(bytes);
        }
    })
    .map_err(|e| match e {
        ImportError::Invalid(e) => {
            CliError::msg(format!("{} was not imported: {e}", file.display()))
        }
        e => CliError::msg(format!("{}: {e}", file.display())),
    })?;
    verifying.finish_and_clear();
    applying.finish_and_clear();
    let mut report = imported.to_json();
    report["file"] = serde_json::json!(file);
    print_json(&report)
}
