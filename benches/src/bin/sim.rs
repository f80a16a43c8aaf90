//! Simulation figures: time-to-all and cost per change for a fleet of N nodes, in virtual time.
//!
//! Runs the deterministic simulator (`meshlite_fixtures::sim`: the production dissemination
//! policy and sync sessions over a simulated network) once per `--nodes` value and prints one
//! JSON object per line. Figures are virtual milliseconds, so they depend on the scenario and
//! seed only, not on the machine.
//!
//! ```sh
//! cargo run --release -p meshlite-benches --bin sim -- --nodes 100 --nodes 1000 --writes 200 --loss 0.01
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use meshlite_core::dissemination::DisseminationConfig;
use meshlite_fixtures::sim::{Scenario, run};

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
}

impl Args {
    fn scenario(&self, nodes: usize) -> Scenario {
        let mut dissemination =
            DisseminationConfig::with_interval(Duration::from_secs(self.interval_s));
        dissemination.push_fanout = self.fanout;
        dissemination.direct_push_max_peers = self.direct_max;
        Scenario {
            nodes,
            writes: self.writes,
            write_window: Duration::from_secs(self.window_s),
            loss: self.loss,
            seed: self.seed,
            dissemination,
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
