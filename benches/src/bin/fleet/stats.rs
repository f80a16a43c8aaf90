//! Latency distributions and summaries across nodes.

use serde_json::{Value, json};

/// Nearest-rank percentile (`p` in 0..=1) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

/// Rounds to 0.1 (milliseconds, percent, ...).
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `{"n", "p50", "p90", "p99", "max"}` of a latency sample in milliseconds.
pub fn latency(values: Vec<f64>) -> Value {
    let v = sorted(values);
    json!({
        "n": v.len(),
        "p50": round1(percentile(&v, 0.50)),
        "p90": round1(percentile(&v, 0.90)),
        "p99": round1(percentile(&v, 0.99)),
        "max": round1(v.last().copied().unwrap_or(f64::NAN)),
    })
}

/// The p99 of a sample (NaN when empty).
pub fn p99(values: Vec<f64>) -> f64 {
    percentile(&sorted(values), 0.99)
}

/// Rounds to 0.01 (small CPU percentages: one clock tick in 20 s is 0.05 %).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `{"median", "max"}` of one figure across nodes.
pub fn across_nodes(values: Vec<f64>) -> Value {
    let v = sorted(values);
    json!({
        "median": round2(percentile(&v, 0.5)),
        "max": round2(v.last().copied().unwrap_or(f64::NAN)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert_eq!(latency(vec![3.0, 1.0, 2.0])["max"], 3.0);
    }
}
