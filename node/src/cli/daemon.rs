//! `meshlite run`, `meshlite fleet ...` (init, issue, renew) and `meshlite peers`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::output::{CliError, Context, print_json};
use crate::config::Config;

/// `meshlite fleet ...`
#[derive(Debug, clap::Subcommand)]
pub enum FleetCommand {
    /// Create a fleet: a CA and a cluster id in DIR (keep DIR/ca.key offline).
    Init {
        /// Directory for the fleet's CA files.
        dir: PathBuf,
    },
    /// Issue a node key and certificate; writes DIR/nodes/NODE_NAME/, the files a node needs
    /// (point its `node.fleet_dir` / `MESHLITE_FLEET_DIR` there).
    Issue {
        /// The fleet directory from `fleet init`.
        dir: PathBuf,
        /// The node's name (letters, digits, `-`).
        node_name: String,
        /// Validity of the certificate in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
    /// Renew a node's certificate before it expires: same key, so the same node id, valid for
    /// DAYS from now. Rewrites DIR/nodes/NODE_NAME/node.pem (and ca.pem, fleet.toml); copy them to
    /// the device and restart its daemon.
    Renew {
        /// The fleet directory from `fleet init`.
        dir: PathBuf,
        /// The node's name (its bundle must exist).
        node_name: String,
        /// Validity of the new certificate in days.
        #[arg(long, default_value_t = 365)]
        days: u32,
    },
}

pub(crate) fn fleet(cmd: FleetCommand) -> Result<(), CliError> {
    match cmd {
        FleetCommand::Init { dir } => {
            let info = meshlite_mesh::fleet::init(&dir)?;
            print_json(&serde_json::json!({
                "dir": dir, "cluster_id": info.cluster_id.to_string(),
            }))
        }
        FleetCommand::Issue {
            dir,
            node_name,
            days,
        } => print_issued(&meshlite_mesh::fleet::issue(&dir, &node_name, days)?),
        FleetCommand::Renew {
            dir,
            node_name,
            days,
        } => print_issued(&meshlite_mesh::fleet::renew(&dir, &node_name, days)?),
    }
}

fn print_issued(issued: &meshlite_mesh::fleet::IssuedNode) -> Result<(), CliError> {
    print_json(&serde_json::json!({
        "node_name": issued.node_name.as_str(),
        "node_id": issued.node_id.to_string(),
        "cluster_id": issued.cluster_id.to_string(),
        "dir": issued.bundle_dir,
        "not_after_unix": issued.not_after.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        "renewed": issued.renewed,
    }))
}

/// Loads the configuration for `run`; `--data` (or `MESHLITE_DATA`) overrides `node.data`.
fn load_config(file: Option<&Path>, data: Option<&Path>) -> Result<Config, CliError> {
    let mut config = Config::load(file, |k| std::env::var(k).ok())?;
    if let Some(data) = data {
        config.node.data = data.to_owned();
    }
    Ok(config)
}

pub(crate) fn run(
    data: Option<&Path>,
    config_file: Option<&Path>,
    print_config: bool,
) -> Result<(), CliError> {
    let config = load_config(config_file, data)?;
    if print_config {
        let text = toml::to_string(&config).context(|| "cannot render the configuration".into())?;
        print!("{text}");
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meshlite")
        .build()
        .context(|| "cannot start the async runtime".into())?;
    runtime
        .block_on(async {
            // Registered before anything starts, so a SIGTERM right after the ready line stops
            // the daemon cleanly instead of killing it.
            let shutdown = meshlite_mesh::tasks::shutdown_signal();
            crate::daemon::run(config, shutdown).await
        })
        .map_err(|e| CliError::msg(format!("{e:#}")))
}

pub(crate) fn peers(http: SocketAddr) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context(|| "cannot start the async runtime".into())?;
    let unreachable = |e: String| {
        CliError::msg(format!(
            "cannot reach the daemon's HTTP listener at {http}: {e}; is `meshlite run` running?"
        ))
    };
    let (status, body) = runtime
        .block_on(crate::httpc::get(http, "/peers"))
        .map_err(|e| unreachable(e.to_string()))?;
    if !status.is_success() {
        return Err(unreachable(format!("HTTP {status}")));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&body).context(|| "daemon sent invalid JSON".into())?;
    for row in value["table"].as_array().into_iter().flatten() {
        print_json(row)?;
    }
    Ok(())
}
