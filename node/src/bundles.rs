//! Bundle export and import on an open store, to any byte sink and from any byte source: the
//! CLI (`meshlite bundle`) writes and reads files, the HTTP API (`/bundle/export`,
//! `/bundle/import`, the `sneakernet` module) streams them. Both use these functions, so a
//! bundle made one way imports the other.
//!
//! Export reads the store in batches of at most [`EXPORT_BATCH_BYTES`] and writes each batch
//! before reading the next: memory stays bounded whatever the bundle's size. Import verifies the
//! whole bundle first (a second pass over the source) so a truncated or corrupt bundle writes
//! nothing, then applies it batch by batch; applying is idempotent.

use std::io::{Read, Write};

use meshlite_core::change::DecodeTxnError;
use meshlite_core::protocol::bundle::{
    BundleHeader, BundleInfo, BundleReadError, BundleReader, BundleWriteError, BundleWriter,
};
use meshlite_core::store::{ApplyError, ApplyReport, ReadError, Store};
use meshlite_core::version::ranges_after;
use meshlite_core::{Summary, Txn};

/// Bytes of transactions read from the store per batch.
pub const EXPORT_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Reading the store failed.
    #[error("cannot read the store: {0}")]
    Read(#[from] ReadError),
    /// Writing the bundle failed (the sink, or an oversized transaction).
    #[error("cannot write the bundle: {0}")]
    Write(#[from] BundleWriteError),
    /// A stored transaction does not decode (a damaged store).
    #[error("stored transaction does not decode: {0}")]
    Decode(#[from] DecodeTxnError),
}

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The bundle is truncated, corrupt or not a bundle; nothing was written.
    #[error("the bundle was not imported: {0}")]
    Invalid(#[source] BundleReadError),
    /// The source failed between the verification pass and the apply pass.
    #[error("cannot read the bundle: {0}")]
    Read(#[source] BundleReadError),
    /// A transaction does not decode.
    #[error("bundle transaction does not decode: {0}")]
    Decode(#[from] DecodeTxnError),
    /// The store refused to apply.
    #[error("cannot apply the bundle: {0}")]
    Apply(#[from] ApplyError),
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Transactions in the bundle.
    pub txns: u64,
    /// Requested ranges already garbage-collected (absent from the bundle).
    pub pruned_ranges: usize,
}

/// Writes a bundle of everything `store` holds that `theirs` lacks (everything without it) to
/// `out`; returns `out` (to flush or sync) and what was written.
pub fn export<W: Write>(
    store: &Store,
    theirs: Option<&Summary>,
    out: W,
) -> Result<(W, Exported), ExportError> {
    let mine = store.summary()?;
    let header = BundleHeader {
        cluster: String::new(),
        exporter: store.replica_id(),
        schema_version: store.schema().version,
        summary: mine.clone(),
        cut_for: theirs.cloned(),
    };
    let mut want = match theirs {
        Some(t) => mine.missing_from(t),
        None => mine.missing_from(&Summary::default()),
    };
    let mut writer = BundleWriter::new(out, &header)?;
    let mut pruned_ranges = 0;
    while !want.is_empty() {
        let batch = store.txns_for(&want, EXPORT_BATCH_BYTES)?;
        writer.write_txns(&batch.txns)?;
        pruned_ranges += batch.pruned.len();
        want = match (batch.more, batch.txns.last()) {
            (true, Some(last)) => ranges_after(&want, Txn::decode(last)?.id),
            _ => Vec::new(),
        };
    }
    let txns = writer.txn_count();
    let out = writer.finish()?;
    if pruned_ranges > 0 {
        tracing::warn!(
            ranges = pruned_ranges,
            "some requested history was garbage-collected and is not in the bundle"
        );
    }
    Ok((
        out,
        Exported {
            txns,
            pruned_ranges,
        },
    ))
}

/// What an import did.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// The verified bundle's header and count.
    pub info: Option<BundleInfo>,
    /// The store's report, summed over the batches.
    pub report: ApplyReport,
}

impl Imported {
    /// The JSON report both the CLI and the HTTP API print.
    pub fn to_json(&self) -> serde_json::Value {
        let r = &self.report;
        serde_json::json!({
            "exporter": self.info.as_ref().map(|i| i.header.exporter),
            "txns": self.info.as_ref().map_or(0, |i| i.txn_count),
            "applied": r.applied + r.unparked,
            "duplicates": r.duplicates,
            // Transactions parked during the import and applied before its end are not left
            // parked.
            "parked": r.parked.saturating_sub(r.unparked),
            "rejected": r.rejected.iter().map(|(id, why)| format!("{id:?}: {why}")).collect::<Vec<_>>(),
        })
    }
}

/// Verifies the bundle read from `open()` (first pass, `progress` gets bytes read), then applies
/// it from a second `open()` (`progress` again). Nothing is written if verification fails.
pub fn import<R: Read>(
    store: &Store,
    mut open: impl FnMut() -> std::io::Result<R>,
    mut progress: impl FnMut(Pass, u64),
) -> Result<Imported, ImportError> {
    let reader = |r| BundleReader::new(r);
    let io = |e: std::io::Error| ImportError::Invalid(BundleReadError::from(e));
    let info = reader(open().map_err(io)?)
        .and_then(|r| r.verify_with_progress(|b| progress(Pass::Verify, b)))
        .map_err(ImportError::Invalid)?;
    let mut bundle = reader(open().map_err(io)?).map_err(ImportError::Read)?;
    let mut report = ApplyReport::default();
    while let Some(batch) = bundle.next_batch().map_err(ImportError::Read)? {
        let txns = batch
            .iter()
            .map(|b| Txn::decode(b))
            .collect::<Result<Vec<_>, _>>()?;
        merge_reports(&mut report, store.apply_remote(txns)?);
        progress(Pass::Apply, bundle.bytes_read());
    }
    Ok(Imported {
        info: Some(info),
        report,
    })
}

/// Which pass of [`import`] a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pass {
    /// Checking the whole bundle.
    Verify,
    /// Applying it.
    Apply,
}

fn merge_reports(total: &mut ApplyReport, r: ApplyReport) {
    total.applied += r.applied;
    total.duplicates += r.duplicates;
    total.parked += r.parked;
    total.unparked += r.unparked;
    total.rejected.extend(r.rejected);
}
