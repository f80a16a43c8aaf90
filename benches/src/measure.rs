//! Timing a subject against its baseline, peak memory, and JSON result lines.
//!
//! [`Race::run`] alternates one batch of the subject with one batch of the baseline, so that a
//! compiler or another process competing for the two cores slows both sides alike. Figures are
//! medians, which a burst of competing work moves less than a mean: a side's rate is the median
//! of its per-batch rates, and the ratio is the median over rounds of the subject's batch rate
//! over the baseline's batch rate in the same round.
//!
//! Each batch also records the CPU time the whole process spent on it (all threads, from
//! `/proc/self/task/*/schedstat`, nanosecond resolution). When other work competes for the
//! cores, wall time depends on how the scheduler shares them, while CPU time is the cost of the
//! work itself; the figures give both.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::BenchError;

/// One timed batch.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Batch {
    /// Wall-clock duration.
    pub wall: Duration,
    /// CPU time of all threads of the process.
    pub cpu: Duration,
    /// Items processed (rows, changes).
    pub items: usize,
}

/// Per-batch timings of one side of a race.
#[derive(Clone, Debug, Default)]
pub struct Side {
    /// Each batch, in order.
    pub batches: Vec<Batch>,
}

impl Side {
    /// Items per wall-clock second of each batch.
    pub fn batch_rates(&self) -> Vec<f64> {
        self.batches
            .iter()
            .map(|b| per_second(b.items, b.wall))
            .collect()
    }

    /// Items per CPU second over all batches.
    pub fn cpu_rate(&self) -> f64 {
        let items: usize = self.batches.iter().map(|b| b.items).sum();
        per_second(items, self.batches.iter().map(|b| b.cpu).sum())
    }

    /// Items per CPU second over the batches in `range`.
    pub fn cpu_rate_of(
        &self,
        range: impl std::slice::SliceIndex<[Batch], Output = [Batch]>,
    ) -> f64 {
        let batches = self.batches.get(range).unwrap_or_default();
        let items: usize = batches.iter().map(|b| b.items).sum();
        per_second(items, batches.iter().map(|b| b.cpu).sum())
    }

    /// Median of the per-batch rates, items per second.
    pub fn rate(&self) -> f64 {
        median(self.batch_rates())
    }

    /// Items over total wall time, items per second (moved more by bursts of competing work).
    pub fn mean_rate(&self) -> f64 {
        let items: usize = self.batches.iter().map(|b| b.items).sum();
        per_second(items, self.batches.iter().map(|b| b.wall).sum())
    }
}

fn per_second(items: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        items as f64 / d.as_secs_f64()
    }
}

/// The median (upper median for an even count); 0 for no values.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// What a figure must reach.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// At least this subject/baseline throughput ratio.
    Ratio(f64),
    /// At least this many subject items per second (the baseline is shown beside it).
    PerSecond(f64),
}

/// A subject and its baseline, timed batch by batch in alternation.
#[derive(Clone, Debug)]
pub struct Race {
    /// Figure name.
    pub name: String,
    /// The Meshlite side.
    pub subject: Side,
    /// The raw-SQLite side.
    pub baseline: Side,
    /// Further sides raced in the same rounds (the typed table, cr-sqlite), by name.
    pub extras: Vec<(String, Side)>,
    /// Sides that could not run, and why (printed as `"<name>": "unavailable: <why>"`).
    pub unavailable: Vec<(String, String)>,
    /// What else the machine did meanwhile.
    pub conditions: Conditions,
    /// What the subject must reach.
    pub target: Target,
}

/// A further side of a race: its name and one batch per call (the round number in, the items
/// processed out).
#[allow(missing_debug_implementations)]
pub struct Extra<'a> {
    /// Name, used as the prefix of its fields (`typed`, `crsqlite`).
    pub name: &'static str,
    /// Runs one batch.
    pub run: Box<dyn FnMut(usize) -> Result<usize, BenchError> + 'a>,
}

/// The load a race ran under: the load average after it and the CPU that other processes took
/// while it ran (from `/proc/stat` minus this process), in cores.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Conditions {
    /// `/proc/loadavg`'s 1, 5 and 15 minute figures at the end of the race.
    pub loadavg: String,
    /// CPU time of all other processes over the race's wall time, in cores.
    pub other_cpu_cores: f64,
}

/// Busy CPU jiffies of the machine and of this process, for [`Conditions`] (and for benches
/// that also drive a child process: [`CpuMark::others_since_excluding`]).
#[derive(Clone, Copy, Debug)]
pub struct CpuMark {
    at: Instant,
    machine: u64,
    own: u64,
}

impl CpuMark {
    /// The machine's and this process's busy time now.
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu  user nice system idle iowait irq softirq steal ...
        let fields: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let busy = [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| fields.get(i))
            .sum();
        let own = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command name (which may hold spaces): utime is the 14th field.
        let after = own.rsplit_once(')').map_or("", |(_, rest)| rest);
        let ticks: Vec<u64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|f| f.parse().ok())
            .collect();
        Self {
            at: Instant::now(),
            machine: busy,
            own: ticks.iter().sum(),
        }
    }

    /// Other processes' CPU since `self`, in cores (`CLK_TCK` = 100 on Linux).
    fn others_since(&self) -> f64 {
        self.others_since_excluding(Duration::ZERO)
    }

    /// Other processes' CPU since `self`, in cores, leaving out this process and `also_ours`
    /// (CPU time of a child process under test over the same interval).
    pub fn others_since_excluding(&self, also_ours: Duration) -> f64 {
        let end = CpuMark::now();
        let secs = end.at.duration_since(self.at).as_secs_f64();
        let machine = end.machine.saturating_sub(self.machine);
        let own = end.own.saturating_sub(self.own);
        let child = (also_ours.as_secs_f64() * 100.0) as u64;
        match secs > 0.0 {
            true => machine.saturating_sub(own).saturating_sub(child) as f64 / 100.0 / secs,
            false => 0.0,
        }
    }
}

fn loadavg() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

impl Race {
    /// A race with no batches yet.
    pub fn new(name: &str, target: Target) -> Self {
        Self {
            name: name.to_owned(),
            subject: Side::default(),
            baseline: Side::default(),
            extras: Vec::new(),
            unavailable: Vec::new(),
            conditions: Conditions::default(),
            target,
        }
    }

    /// Records that side `name` could not run, and why.
    pub fn unavailable(mut self, name: &str, why: &str) -> Self {
        self.unavailable.push((name.to_owned(), why.to_owned()));
        self
    }

    /// As [`Race::run`], with `extras` timed after the baseline in every round.
    pub fn run_with(
        mut self,
        rounds: usize,
        mut subject: impl FnMut(usize) -> Result<usize, BenchError>,
        mut baseline: impl FnMut(usize) -> Result<usize, BenchError>,
        mut extras: Vec<Extra<'_>>,
    ) -> Result<Self, BenchError> {
        let mark = CpuMark::now();
        let mut sides: Vec<Side> = extras.iter().map(|_| Side::default()).collect();
        for round in 0..rounds {
            timed(&mut self.subject, || subject(round))?;
            timed(&mut self.baseline, || baseline(round))?;
            for (extra, side) in extras.iter_mut().zip(&mut sides) {
                timed(side, || (extra.run)(round))?;
            }
        }
        let names = extras.iter().map(|e| e.name.to_owned());
        self.extras.extend(names.zip(sides));
        self.conditions = Conditions {
            loadavg: loadavg(),
            other_cpu_cores: mark.others_since(),
        };
        Ok(self)
    }

    /// Runs `rounds` rounds of one subject batch then one baseline batch; each closure gets the
    /// round number and returns the items it processed.
    pub fn run(
        self,
        rounds: usize,
        subject: impl FnMut(usize) -> Result<usize, BenchError>,
        baseline: impl FnMut(usize) -> Result<usize, BenchError>,
    ) -> Result<Self, BenchError> {
        self.run_with(rounds, subject, baseline, Vec::new())
    }

    /// Median over rounds of subject batch rate / baseline batch rate.
    pub fn ratio(&self) -> f64 {
        let pairs = self
            .subject
            .batch_rates()
            .into_iter()
            .zip(self.baseline.batch_rates());
        median(
            pairs
                .filter(|&(_, b)| b > 0.0)
                .map(|(s, b)| s / b)
                .collect(),
        )
    }

    /// Subject items per CPU second over baseline items per CPU second.
    pub fn cpu_ratio(&self) -> f64 {
        let base = self.baseline.cpu_rate();
        if base > 0.0 {
            self.subject.cpu_rate() / base
        } else {
            0.0
        }
    }

    /// True when the subject reached its target.
    pub fn met(&self) -> bool {
        match self.target {
            Target::Ratio(min) => self.ratio() >= min,
            Target::PerSecond(min) => self.subject.rate() >= min,
        }
    }

    /// The result as one JSON object.
    pub fn to_json(&self) -> Value {
        let (target_ratio, target_per_s) = match self.target {
            Target::Ratio(r) => (Some(r), None),
            Target::PerSecond(r) => (None, Some(r)),
        };
        let mut line = json!({
            "figure": self.name,
            "store_per_s": self.subject.rate().round(),
            "baseline_per_s": self.baseline.rate().round(),
            "ratio": round3(self.ratio()),
            "target_ratio": target_ratio,
            "target_store_per_s": target_per_s,
            "met": self.met(),
            "batches": self.subject.batches.len(),
            "store_mean_per_s": self.subject.mean_rate().round(),
            "baseline_mean_per_s": self.baseline.mean_rate().round(),
            "store_per_cpu_s": self.subject.cpu_rate().round(),
            "baseline_per_cpu_s": self.baseline.cpu_rate().round(),
            "cpu_ratio": round3(self.cpu_ratio()),
            "loadavg": self.conditions.loadavg,
            "other_cpu_cores": round3(self.conditions.other_cpu_cores),
        });
        let base = self.baseline.cpu_rate();
        let store = self.subject.cpu_rate();
        for (name, side) in &self.extras {
            let rate = side.cpu_rate();
            let of = |a: f64, b: f64| if b > 0.0 { round3(a / b) } else { 0.0 };
            line[format!("{name}_per_cpu_s")] = json!(rate.round());
            line[format!("{name}_cpu_ratio")] = json!(of(rate, base));
            line[format!("store_cpu_ratio_vs_{name}")] = json!(of(store, rate));
        }
        for (name, why) in &self.unavailable {
            line[name.as_str()] = json!(format!("unavailable: {why}"));
        }
        line
    }
}

/// Times `f`, which returns its item count.
fn timed(side: &mut Side, f: impl FnOnce() -> Result<usize, BenchError>) -> Result<(), BenchError> {
    let cpu = process_cpu_time();
    let start = Instant::now();
    let items = f()?;
    let wall = start.elapsed();
    let cpu = process_cpu_time().saturating_sub(cpu);
    side.batches.push(Batch { wall, cpu, items });
    Ok(())
}

/// CPU time consumed so far by the live threads of this process (0 where unavailable).
///
/// The kernel brings a running thread's counter up to date only when it is scheduled out or
/// at a timer tick; yielding first makes the calling thread's share exact. Other threads of a
/// bench are blocked waiting for the caller at this point, so theirs are exact too.
pub fn process_cpu_time() -> Duration {
    std::thread::yield_now();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    let on_cpu_ns = |entry: std::fs::DirEntry| -> Option<u64> {
        let stat = std::fs::read_to_string(entry.path().join("schedstat")).ok()?;
        stat.split_whitespace().next()?.parse().ok()
    };
    Duration::from_nanos(tasks.filter_map(Result::ok).filter_map(on_cpu_ns).sum())
}

/// Rounds to three decimals for printing.
pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A `kB` field of `/proc/self/status` (`VmHWM` = peak resident set, `VmRSS` = current).
pub fn proc_status_kib(field: &str) -> Option<u64> {
    proc_status_kib_of("self", field)
}

/// A `kB` field of `/proc/<pid>/status` (`pid` may be `self`).
pub fn proc_status_kib_of(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// The machine the figures come from: CPUs and the load average (other work competing for them).
pub fn machine() -> Value {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    json!({ "cpus": cpus, "loadavg_1_5_15": load.join(" ") })
}

/// Prints one JSON object on its own line (the bench binaries' output format).
pub fn emit(value: &Value) {
    println!("{value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn race_ratio_is_the_median_of_per_round_ratios() {
        let batch = |wall: u64, cpu: u64| Batch {
            wall: Duration::from_millis(wall),
            cpu: Duration::from_millis(cpu),
            items: 100,
        };
        let mut race = Race::new("x", Target::Ratio(0.5));
        race.subject = Side {
            batches: vec![batch(20, 20), batch(20, 20), batch(400, 20)],
        };
        race.baseline = Side {
            batches: vec![batch(10, 10), batch(10, 10), batch(10, 5)],
        };
        assert!(
            (race.ratio() - 0.5).abs() < 1e-9,
            "one disturbed round does not move it"
        );
        assert!((race.subject.rate() - 5000.0).abs() < 1e-6);
        assert!((race.subject.mean_rate() - 300.0 / 0.44).abs() < 1e-6);
        assert_eq!(race.to_json()["met"], json!(true));
        race.target = Target::PerSecond(5001.0);
        assert!(!race.met(), "5000/s is below the target");
        assert_eq!(median(vec![]), 0.0);
        assert!((race.cpu_ratio() - 25.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn process_cpu_time_grows_with_work() {
        let before = process_cpu_time();
        let mut x = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(30) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        assert!(x != 1);
        let busy = process_cpu_time();
        assert!(
            busy >= before + Duration::from_millis(5),
            "{before:?} -> {busy:?}"
        );
    }

    #[test]
    fn reads_peak_rss_of_this_process() {
        let rss = proc_status_kib("VmRSS").unwrap();
        let hwm = proc_status_kib("VmHWM").unwrap();
        assert!(
            rss > 0 && hwm >= rss,
            "peak {hwm} KiB below current {rss} KiB read before it"
        );
        assert_eq!(proc_status_kib("NoSuchField"), None);
    }
}
