//! `meshlite-bridge`: the central bridge that materializes the mesh into Supabase Postgres.
//!
//! The bridge is a mesh peer like any node (it reuses `meshlite-core`'s protocol and, through the
//! node's `SyncBackend` seam, the QUIC transport) whose store is central Postgres. Its work is
//! the subject of the central-bridge issue; until then this binary only identifies itself and
//! refuses to run, so nothing mistakes it for a working bridge.

use std::process::ExitCode;

use clap::Parser;

/// Meshlite central bridge (not yet functional: see the central-bridge issue).
#[derive(Debug, Parser)]
#[command(name = "meshlite-bridge", version, about)]
struct Cli {}

fn main() -> ExitCode {
    let _cli = Cli::parse();
    eprintln!(
        "error: meshlite-bridge {} does not materialize to Postgres yet; run `meshlite` nodes meanwhile",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
