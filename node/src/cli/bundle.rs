//! `meshlite bundle export|import`: sneakernet sync through files, on the sync protocol's framing.
//!
//! Export cuts the bundle against the importer's summary (`--for`, the output of `meshlite
//! summary` on the other device) so it holds only what the other side lacks. Import verifies the
//! whole file first (magic, every frame and transaction, count, checksum) so a truncated or
//! corrupt bundle writes nothing, then applies it in batches; applying is idempotent, so importing
//! the same bundle twice is harmless.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use meshlite_core::protocol::bundle::{BundleHeader, BundleReader, BundleWriter};
use meshlite_core::store::{ApplyReport, Store};
use meshlite_core::version::ranges_after;
use meshlite_core::{Summary, Txn};

use super::data::open;
use super::output::{CliError, Context, print_json};

/// Bytes of transactions read from the store per batch.
const EXPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;

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
    let store = open(dir)?;
    let result = match cmd {
        BundleCommand::Export { file, for_summary } => {
            export(&store, &file, for_summary.as_deref())
        }
        BundleCommand::Import { file } => import(&store, &file),
    };
    store.close()?;
    result
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
    let mine = store.summary()?;
    let header = BundleHeader {
        cluster: String::new(),
        exporter: store.replica_id(),
        schema_version: store.schema().version,
        summary: mine.clone(),
        cut_for: theirs.clone(),
    };
    let mut want = mine.missing_from(&theirs.unwrap_or_default());
    let out = File::create(file).context(|| format!("cannot create {}", file.display()))?;
    let mut writer = BundleWriter::new(BufWriter::new(out), &header)?;
    let mut pruned = Vec::new();
    while !want.is_empty() {
        let batch = store.txns_for(&want, EXPORT_BATCH_BYTES)?;
        writer.write_txns(&batch.txns)?;
        pruned.extend(batch.pruned);
        want = match (batch.more, batch.txns.last()) {
            (true, Some(last)) => {
                let last =
                    Txn::decode(last).context(|| "stored transaction does not decode".into())?;
                ranges_after(&want, last.id)
            }
            _ => Vec::new(),
        };
    }
    let txns = writer.txn_count();
    let out = writer.finish()?;
    let bytes = durable(out, file)?;
    if !pruned.is_empty() {
        tracing::warn!(
            ranges = pruned.len(),
            "some requested history was garbage-collected and is not in the bundle"
        );
    }
    print_json(&serde_json::json!({
        "file": file, "txns": txns, "bytes": bytes, "pruned_ranges": pruned.len(),
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

fn open_bundle(file: &Path) -> Result<BundleReader<BufReader<File>>, CliError> {
    let f = File::open(file).context(|| format!("cannot open {}", file.display()))?;
    BundleReader::new(BufReader::new(f)).context(|| format!("{}", file.display()))
}

fn import(store: &Store, file: &Path) -> Result<(), CliError> {
    let total = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(total, "verifying");
    let info = open_bundle(file)?
        .verify_with_progress(|b| bar.set_position(b))
        .context(|| format!("{} was not imported", file.display()))?;
    bar.finish_and_clear();

    let bar = progress_bar(total, "applying");
    let mut reader = open_bundle(file)?;
    let mut report = ApplyReport::default();
    while let Some(batch) = reader.next_batch()? {
        let txns = batch
            .iter()
            .map(|b| Txn::decode(b))
            .collect::<Result<Vec<_>, _>>()?;
        let r = store.apply_remote(txns)?;
        merge_reports(&mut report, r);
        bar.set_position(reader.bytes_read());
    }
    bar.finish_and_clear();
    print_json(&serde_json::json!({
        "file": file,
        "exporter": info.header.exporter,
        "txns": info.txn_count,
        "applied": report.applied + report.unparked,
        "duplicates": report.duplicates,
        // Transactions parked during the import and applied before its end are not left parked.
        "parked": report.parked.saturating_sub(report.unparked),
        "rejected": report.rejected.iter().map(|(id, why)| format!("{id:?}: {why}")).collect::<Vec<_>>(),
    }))
}

fn merge_reports(total: &mut ApplyReport, r: ApplyReport) {
    total.applied += r.applied;
    total.duplicates += r.duplicates;
    total.parked += r.parked;
    total.unparked += r.unparked;
    total.rejected.extend(r.rejected);
}
