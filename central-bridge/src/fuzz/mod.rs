//! Body of the fuzz target `bridge_txn` (`fuzz/bridge/`): the bridge's handling of a peer's
//! transactions, honest and hostile, against a node that receives the same ones. Behind the
//! `testkit` feature; `fuzz::tests` runs seeds and mutations of it in `cargo test`.
//!
//! One execution: an honest replica makes 1–8 writes and 1–6 attacks are forged from the bytes
//! (`meshlite_core::hostile`: foreign and impersonated actors, missing dependencies, huge and
//! corrupt changes, wrong kinds, hostile names and keys, replays, reused ids, sequence gaps);
//! then a [`Script`] from the remaining bytes delivers them to the bridge's [`PgReplica`] and to
//! a node's store, in any order and batching, with repeats, some to one side only (and the
//! bridge's batch size and document cache chosen by the bytes too). What must hold:
//! - every apply answers (a refusal is an answer) and nothing panics;
//! - a delivery applies none of the transactions its replica held before it (re-delivery,
//!   also of one transaction twice in a batch, applies it once);
//! - after anti-entropy between the two, both hold the same transactions but for those Postgres
//!   cannot store, resending what either holds applies nothing, and every Postgres row equals
//!   the node's record field by field ([`compare`]).
//!
//! Postgres is real: [`fuzz`] takes the server from `DATABASE_URL` and panics, saying how to
//! start one, without it. A [`Harness`] prepares the bridge's state and tables once, in two
//! schemas of its own (`fuzz_<tag>_state`, `fuzz_<tag>`); each execution starts from emptied
//! tables (`DELETE`s as the bridge, see [`reset_sql`]) and a new [`PgReplica`] (new connections, an empty
//! document cache), so executions never see each other's rows.

pub mod compare;
pub mod script;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::OnceLock;

use arbitrary::Unstructured;
use meshlite_core::hostile::{self, fresh_store};
use meshlite_core::{Txn, TxnId};
use meshlite_mesh::replica::Replica;

use crate::config::Config;
use crate::pg::{PgConn, PgTarget};
use crate::replica::{Context, PgReplica};
use crate::{service, state};

pub use script::{Delivery, Script, Side};

/// State tables an execution leaves alone: the migrations applied and the bridge's identity.
const KEPT: [&str; 3] = ["migrations", "bridges", "meta"];

/// How to get a Postgres for [`fuzz`], in its panic message.
const NEED_POSTGRES: &str = "the bridge_txn fuzz body needs a real Postgres: set \
    DATABASE_URL=postgres://USER@HOST:PORT/DB (a role that may create schemas). A throwaway one: \
    `fuzz/bridge/postgres.sh` (initdb + pg_ctl of Postgres 14+ as an unprivileged user; it \
    prints the URL), or any server you may create schemas on";

/// Fuzz body: one execution on the process's [`Harness`] over `DATABASE_URL`.
pub fn fuzz(data: &[u8]) {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS
        .get_or_init(|| {
            let url = std::env::var("DATABASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| panic!("{NEED_POSTGRES}"));
            Harness::new(&url, &format!("p{}", std::process::id()))
        })
        .run(data);
}

/// A prepared bridge database and the runtime that drives it (see the module doc).
#[derive(Debug)]
pub struct Harness {
    /// Checks and resets; dropped before the runtime that drives it.
    pg: PgConn,
    target: PgTarget,
    base: Context,
    reset: String,
    /// Schemas dropped with the harness.
    drop: String,
    rt: tokio::runtime::Runtime,
    _schema_file: tempfile::NamedTempFile,
}

impl Harness {
    /// Prepares the schemas `fuzz_<tag>_state` and `fuzz_<tag>` (dropped first if an earlier
    /// process left them) on the database at `url`. Panics if Postgres refuses.
    pub fn new(url: &str, tag: &str) -> Harness {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let mut schema_file = tempfile::NamedTempFile::new().expect("a schema file");
        schema_file
            .write_all(hostile::SCHEMA.as_bytes())
            .expect("write the schema file");
        let mut config = Config::default();
        config.postgres.url = Some(url.to_owned());
        config.postgres.state_schema = format!("fuzz_{tag}_state");
        config.postgres.table_schema = format!("fuzz_{tag}");
        config.bridge.schema = Some(schema_file.path().to_path_buf());
        config.bridge.name = format!("fuzz-{tag}");
        let (pg, target, base, reset) = rt.block_on(prepare(&config));
        let s = &base.schemas;
        Harness {
            pg,
            target,
            drop: format!(
                "DROP SCHEMA {} CASCADE; DROP SCHEMA {} CASCADE",
                s.state, s.tables
            ),
            base,
            reset,
            rt,
            _schema_file: schema_file,
        }
    }

    /// One execution (see the module doc); panics on a violated property.
    pub fn run(&self, data: &[u8]) {
        let mut u = Unstructured::new(data);
        let (_honest_dir, honest_store) = fresh_store();
        let Ok(honest) = hostile::honest_txns(&mut u, &honest_store) else {
            return;
        };
        let Ok(attacks) = hostile::forge(&mut u, &honest) else {
            return;
        };
        let kinds: Vec<hostile::Kind> = attacks.iter().map(|a| a.kind).collect();
        let sent: Vec<Txn> = honest
            .into_iter()
            .chain(attacks.into_iter().map(|a| a.txn))
            .collect();
        let Ok(script) = Script::decode(&mut u, sent.len()) else {
            return;
        };
        let (_node_dir, node) = fresh_store();
        self.rt.block_on(async {
            self.pg
                .client()
                .batch_execute(&self.reset)
                .await
                .expect("empty the bridge's tables");
            let bridge = PgReplica::new(self.target.clone(), self.context(&script));
            for d in &script.deliveries {
                let batch: Vec<Txn> = d.txns.iter().map(|&i| sent[i].clone()).collect();
                match d.to {
                    Side::Bridge => deliver(&bridge, &batch, "the bridge").await,
                    Side::Node => deliver(&node, &batch, "the node").await,
                }
            }
            compare::anti_entropy(&bridge, &node).await;
            let label = format!("attacks {kinds:?}, script {script:?}");
            compare::assert_resend_applies_nothing(&bridge, &sent, &label).await;
            compare::assert_resend_applies_nothing(&node, &sent, &label).await;
            let tables = &self.base.schemas.tables;
            compare::assert_alike(&bridge, self.pg.client(), tables, &node, &sent, &label).await;
        });
    }

    /// The bridge's context with the script's settings.
    fn context(&self, script: &Script) -> Context {
        Context {
            batch_size: script.batch_size,
            doc_cache_bytes: if script.doc_cache { 16 << 20 } else { 0 },
            ..self.base.clone()
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Best effort: a harness dropped while panicking must not panic again.
        let _ = self.rt.block_on(self.pg.client().batch_execute(&self.drop));
    }
}

/// Connects, drops what an earlier process left, migrates and builds the tables as
/// `meshlite-bridge run` does, and builds the statement that empties them.
async fn prepare(config: &Config) -> (PgConn, PgTarget, Context, String) {
    let target = config.pg_target().expect("a valid DATABASE_URL");
    let mut pg = target
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{NEED_POSTGRES}"));
    let schemas = config.schemas().expect("valid schema names");
    let stale = format!(
        "DROP SCHEMA IF EXISTS {} CASCADE; DROP SCHEMA IF EXISTS {} CASCADE",
        schemas.state, schemas.tables
    );
    pg.client()
        .batch_execute(&stale)
        .await
        .expect("drop stale schemas");
    let tables = service::load_tables(config).expect("the hostile schema's tables");
    service::prepare(&mut pg, config, &tables)
        .await
        .expect("migrate and build the tables");
    let replica = state::bridge_replica_id(pg.client(), &schemas, &config.bridge.name)
        .await
        .expect("the bridge's replica id");
    let base = service::replica_context(config, replica, &tables).expect("the context");
    let reset = reset_sql(&pg, &base).await;
    (pg, target, base, reset)
}

/// A `DELETE` of every row of every table in the two schemas but [`KEPT`], as the bridge (so
/// no capture trigger records it as a central edit). Not `TRUNCATE`: it makes new files for
/// every table, 50–180 ms an execution here against about 2 ms for the few rows there are.
async fn reset_sql(pg: &PgConn, ctx: &Context) -> String {
    let s = &ctx.schemas;
    let rows = pg
        .client()
        .query(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables \
             WHERE (schemaname = $1 AND tablename <> ALL($3)) OR schemaname = $2",
            &[&s.state.as_str(), &s.tables.as_str(), &&KEPT[..]],
        )
        .await
        .expect("list the bridge's tables");
    let deletes: String = rows
        .iter()
        .map(|r| format!("DELETE FROM {}; ", r.get::<_, String>(0)))
        .collect();
    format!("BEGIN; SET LOCAL meshlite.bridge = 'on'; {deletes}COMMIT")
}

/// Delivers `batch` to `r`: it answers, and none of what `r` held before is new again.
async fn deliver(r: &impl Replica, batch: &[Txn], side: &str) {
    let before = compare::held(r).await;
    let applied = compare::apply(r, batch).await;
    let fresh: BTreeSet<TxnId> = batch
        .iter()
        .map(|t| t.id)
        .filter(|id| !before.contains(id))
        .collect();
    let resent = batch.iter().filter(|t| before.contains(&t.id)).count();
    assert!(
        applied.new <= fresh.len() && applied.duplicates >= resent,
        "{side} applied a transaction again: {} new of {} not held before, {} duplicates of {} \
         held before ({applied:?})",
        applied.new,
        fresh.len(),
        applied.duplicates,
        resent
    );
}
