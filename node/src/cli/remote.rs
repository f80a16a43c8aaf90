//! `summary` and `bundle export|import` while a daemon holds the data directory: the store's
//! lock refuses the CLI, so these commands find the daemon's HTTP address in the directory
//! ([`crate::endpoint`]) and ask it (`/summary`, `/bundle/export`, `/bundle/import`, see
//! [`crate::sneakernet`]). Bundles are streamed both ways; the output is the same JSON as when
//! the CLI opens the store itself.

use std::net::SocketAddr;
use std::path::Path;

use meshlite_core::protocol::bundle::BundleReader;
use meshlite_core::store::{OpenError, OpenOptions, Store};
use serde_json::Value;

use super::output::{CliError, Context};
use crate::httpc::{self, Streamed};

/// Where a store command runs.
pub(crate) enum Target {
    /// The CLI opened the store itself.
    Local(Store),
    /// A running daemon holds it; ask its HTTP listener.
    Daemon(SocketAddr),
}

/// Opens the store in `dir`, or, when a daemon holds it and recorded its address, names the
/// daemon.
pub(crate) fn open_target(dir: &Path) -> Result<Target, CliError> {
    match Store::open(dir, OpenOptions::default()) {
        Ok(store) => Ok(Target::Local(store)),
        Err(e @ OpenError::Locked { .. }) => match crate::endpoint::read(dir) {
            Some(addr) => Ok(Target::Daemon(addr)),
            None => Err(CliError::msg(format!(
                "cannot open store {}: {e}",
                dir.display()
            ))),
        },
        Err(e) => Err(CliError::msg(format!(
            "cannot open store {}: {e}",
            dir.display()
        ))),
    }
}

fn block_on<T>(
    addr: SocketAddr,
    f: impl Future<Output = Result<T, httpc::HttpcError>>,
) -> Result<T, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())?;
    runtime.block_on(f).map_err(|e| {
        CliError::msg(format!(
            "the data directory is held by a daemon at {addr}, which cannot be reached: {e}"
        ))
    })
}

/// The error a daemon answered, as a CLI error.
fn refused(addr: SocketAddr, status: hyper::StatusCode, body: &[u8]) -> CliError {
    let detail = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    CliError::msg(format!("the daemon at {addr} answered {status}: {detail}"))
}

/// `GET /summary`.
pub(crate) fn summary(addr: SocketAddr) -> Result<Value, CliError> {
    let (status, body) = block_on(addr, httpc::get(addr, "/summary"))?;
    if !status.is_success() {
        return Err(refused(addr, status, &body));
    }
    serde_json::from_slice(&body).context(|| "the daemon sent invalid JSON".into())
}

/// `POST /bundle/export` into `file` (synced, then verified); the CLI's export report.
pub(crate) fn export(
    addr: SocketAddr,
    theirs: Option<Vec<u8>>,
    file: &Path,
) -> Result<Value, CliError> {
    let result = export_into(addr, theirs, file);
    if result.is_err() {
        let _ = std::fs::remove_file(file);
    }
    result
}

fn export_into(addr: SocketAddr, theirs: Option<Vec<u8>>, file: &Path) -> Result<Value, CliError> {
    let what = || format!("cannot write {}", file.display());
    let out = std::fs::File::create(file).context(what)?;
    let mut out = tokio::fs::File::from_std(out);
    let body = theirs.unwrap_or_default();
    let streamed = block_on(addr, async {
        let r = httpc::post_to_writer(addr, "/bundle/export", body, &mut out).await?;
        out.sync_all()
            .await
            .map_err(|source| httpc::HttpcError::Write { source })?;
        Ok::<_, httpc::HttpcError>(r)
    })?;
    let bytes = match streamed {
        Streamed::Written(n) => n,
        Streamed::Refused(status, body) => return Err(refused(addr, status, &body)),
    };
    // A response cut short (the daemon failed mid-export) lacks the trailer: refuse it here.
    let f = std::fs::File::open(file).context(what)?;
    let info = BundleReader::new(std::io::BufReader::new(f))
        .and_then(|r| r.verify())
        .context(|| format!("the daemon at {addr} sent an incomplete bundle"))?;
    Ok(serde_json::json!({
        "file": file, "txns": info.txn_count, "bytes": bytes, "via": addr.to_string(),
    }))
}

/// `POST /bundle/import` with `file` streamed; the daemon's import report.
pub(crate) fn import(addr: SocketAddr, file: &Path) -> Result<Value, CliError> {
    let f = std::fs::File::open(file).context(|| format!("cannot open {}", file.display()))?;
    let input = tokio::fs::File::from_std(f);
    let (status, body) = block_on(addr, async move {
        httpc::post_stream(addr, "/bundle/import", input).await
    })?;
    if !status.is_success() {
        return Err(refused(addr, status, &body));
    }
    let mut report: Value =
        serde_json::from_slice(&body).context(|| "the daemon sent invalid JSON".into())?;
    report["file"] = serde_json::json!(file);
    report["via"] = addr.to_string().into();
    Ok(report)
}
