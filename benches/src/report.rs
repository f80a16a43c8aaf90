//! What the HTTP bench binaries (`rest_ratios`, `http_writes`) share besides the daemon: latency
//! quantiles, the summary line of ranges over runs, and the async `main` on a two-thread
//! runtime.

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// The `q` quantile of `latencies`, in µs (0 when empty).
pub fn quantile_us(latencies: &[Duration], q: f64) -> f64 {
    let mut l = latencies.to_vec();
    l.sort();
    let i = ((l.len() as f64 - 1.0) * q).round() as usize;
    l.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// `[min, max]` of `key` (a JSON pointer) over the figure lines named `figure`.
fn range(figures: &[Value], figure: &str, key: &str) -> Value {
    let vals: Vec<f64> = figures
        .iter()
        .filter(|f| f["figure"] == figure)
        .filter_map(|f| f.pointer(key)?.as_f64())
        .collect();
    let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
    let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    json!([min, max])
}

/// The summary line: per figure name, `[min, max]` over the runs of each `(name, pointer)`.
pub fn summary(figures: &[Value], names: &[&str], keys: &[(&str, &str)]) -> Value {
    let per_figure: Map<String, Value> = names
        .iter()
        .map(|&figure| {
            let m: Map<String, Value> = keys
                .iter()
                .map(|(name, ptr)| ((*name).to_owned(), range(figures, figure, ptr)))
                .collect();
            (figure.to_owned(), Value::Object(m))
        })
        .collect();
    json!({ "summary": "ranges [min, max] over runs", "figures": per_figure })
}

/// Runs `bench` on a two-worker Tokio runtime; an error is printed as `name: error`.
pub fn run_main(name: &str, bench: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
