//! Simulation figures: time-to-all and cost per change for a fleet of N nodes, in virtual time.
//!
//! Runs the deterministic simulator (`meshlite_fixtures::sim`: the production dissemination
//! policy and sync sessions over a simulated network) once per `--nodes` value and prints one
//! JSON object per line. Figures are virtual milliseconds, so they depend on the scenario and
//! seed only, not on the machine.
//!
//! Fleets above the direct-push threshold run the overlay (HyParView + Plumtree) unless `--flat`
//! asks for the flat policy (random fanout and relay over full membership) as the baseline.
//!
//! ```sh
//! cargo run --release -p meshlite-benches --bin sim -- --nodes 100 --nodes 1000 --writes 200 --loss 0.01
//! cargo run --release -p meshlite-benches --bin sim -- --nodes 1000 --flat
//! cargo run --release -p meshlite-benches --bin sim -- --nodes 1000 --churn 0.1
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use meshlite_core::dissemination::DisseminationConfig;
use meshlite_fixtures::sim::{Churn, OverlayMode, Partition, Scenario, run};

/// Simulate a Meshlite fleet and print p50/p99 time-to-all, messages and bytes per change.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// Fleet size; repeat for several runs.
    #[arg(long = "nodes", default_values_t = [100usize, 1000])]
    nodes: Vec<usize>,
    /// Number of writes, each at a random node.
    #[arg(long, default_value_t = 200)]
    writes: usize,
    /// Writes are spread uniformly over this many seconds.
    #[arg(long, default_value_t = 20)]
    window_s: u64,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.01)]
    loss: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Push fanout in gossip mode.
    #[arg(long, default_value_t = 3)]
    fanout: usize,
    /// Nodes with at most this many peers push directly to all (0 = always gossip).
    #[arg(long, default_value_t = 32)]
    direct_max: usize,
    /// Anti-entropy interval in seconds.
    #[arg(long, default_value_t = 10)]
    interval_s: u64,
    /// Flat policy at any size (random fanout and relay; the baseline) instead of the overlay.
    #[arg(long)]
    flat: bool,
    /// Overlay active view size.
    #[arg(long, default_value_t = 5)]
    active: usize,
    /// Plumtree graft timeout in milliseconds.
    #[arg(long, default_value_t = 80)]
    graft_ms: u64,
    /// Plumtree: eager links a node keeps at least (1 = classic single tree).
    #[arg(long, default_value_t = 4)]
    min_eager: usize,
    /// Share of nodes that crash during the write window and restart 5 s later.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Cut this share of the nodes off for the middle half of the write window.
    #[arg(long, default_value_t = 0.0)]
    partition: f64,
}

impl Args {
    fn scenario(&self, nodes: usize) -> Scenario {
        let mut dissemination =
            DisseminationConfig::with_interval(Duration::from_secs(self.interval_s));
        dissemination.push_fanout = self.fanout;
        dissemination.direct_push_max_peers = self.direct_max;
        let window = Duration::from_secs(self.window_s);
        let mut overlay = OverlayMode::default();
        overlay.overlay.active_capacity = self.active;
        overlay.tree.graft_timeout = Duration::from_millis(self.graft_ms);
        overlay.tree.min_eager = self.min_eager;
        let start = if self.flat {
            Duration::ZERO
        } else {
            overlay.warmup
        };
        let churn = (self.churn > 0.0).then(|| Churn {
            fraction: self.churn,
            from: start,
            until: start + window,
            downtime: Duration::from_secs(5),
        });
        let cut = (nodes as f64 * self.partition).round() as u32;
        let partitions = (cut > 0)
            .then(|| Partition {
                nodes: (0..cut).collect(),
                from: start + window / 4,
                until: start + window * 3 / 4,
            })
            .into_iter()
            .collect();
        Scenario {
            nodes,
            writes: self.writes,
            write_window: window,
            loss: self.loss,
            seed: self.seed,
            dissemination,
            overlay: (!self.flat).then_some(overlay),
            churn,
            partitions,
            ..Scenario::default()
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    for &nodes in &args.nodes {
        let scenario = args.scenario(nodes);
        let started = Instant::now();
        match run(&scenario) {
            Ok(report) => {
                let mut json = report.summary_json();
                json["loss"] = args.loss.into();
                json["push_fanout"] = args.fanout.into();
                json["direct_push_max_peers"] = args.direct_max.into();
                json["anti_entropy_interval_s"] = args.interval_s.into();
                json["churn"] = args.churn.into();
                json["min_eager"] = args.min_eager.into();
                json["graft_ms"] = args.graft_ms.into();
                json["partition"] = args.partition.into();
                json["wall_clock_s"] = started.elapsed().as_secs_f64().into();
                println!("{json}");
            }
            Err(e) => {
                eprintln!("sim: N={nodes}: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
