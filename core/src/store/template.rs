//! Images of a freshly opened, empty store, for the test harnesses that open many stores
//! (feature `testkit`; see `crate::convergence` and `crate::hostile`).
//!
//! Opening a new data directory runs every migration step and installs the schema: dozens of DDL
//! statements, each of which makes SQLite re-parse the whole layout. A harness that opens 2–5
//! fresh stores per fuzz execution spent about a third of its time there. A [`Template`] does it
//! once: it opens a store with the given options in a scratch directory, closes it (the close
//! checkpoints the WAL into the database file), removes the replica id and keeps the file's
//! bytes. [`Template::open`] writes those bytes into a new directory and opens a real store on
//! them through [`Store::open`], which finds every migration recorded and the schema stored, and
//! gives the replica a new random id, exactly as a first open does. Nothing of the store itself
//! changes: same file format, same open path, same writer.

use std::path::Path;

use rusqlite::Connection;

use super::open::{DB_FILE, REPLICA_KEY};
use super::{OpenError, OpenOptions, Store};

/// The database file of a new, empty store (see the module docs).
#[derive(Clone, Debug)]
pub struct Template {
    image: Vec<u8>,
}

impl Template {
    /// Opens a store with `opts` in a scratch directory, closes it and keeps its database
    /// without its replica id.
    pub fn new(opts: OpenOptions) -> Result<Template, OpenError> {
        let scratch = crate::scratch::dir();
        let store = Store::open(scratch.path(), opts)?;
        store
            .close()
            .map_err(|e| OpenError::Corrupt(format!("template store did not close: {e}")))?;
        let path = scratch.path().join(DB_FILE);
        let conn = Connection::open(&path)?;
        conn.execute("DELETE FROM meta WHERE key = ?1", [REPLICA_KEY])?;
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        conn.close().map_err(|(_, e)| e)?;
        let image = std::fs::read(&path).map_err(|source| OpenError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Template { image })
    }

    /// Opens a new store in `dir` (created if missing; it must hold no store) from the image,
    /// under a new random replica id. `opts` should name the template's schema (or `None`):
    /// another one is installed as an upgrade, as on any reopen.
    pub fn open(&self, dir: &Path, opts: OpenOptions) -> Result<Store, OpenError> {
        let io = |source| OpenError::Io {
            path: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let file = dir.join(DB_FILE);
        if file.exists() {
            return Err(OpenError::Corrupt(format!(
                "{} exists: a template only starts new stores",
                file.display()
            )));
        }
        std::fs::write(&file, &self.image).map_err(io)?;
        Store::open(dir, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WriteOp;

    #[test]
    fn stores_from_one_template_are_distinct_empty_replicas() {
        let template = Template::new(OpenOptions::default()).expect("template");
        let (a, b) = (crate::scratch::dir(), crate::scratch::dir());
        let sa = template.open(a.path(), OpenOptions::default()).expect("a");
        let sb = template.open(b.path(), OpenOptions::default()).expect("b");
        assert_ne!(sa.replica_id(), sb.replica_id());
        assert_eq!(sa.summary().expect("summary").txn_count(), 0);
        sa.transact(vec![WriteOp::Put {
            collection: "c".into(),
            value: serde_json::json!({"id": "x"}),
            recreate: false,
        }])
        .expect("write");
        let id = sa.replica_id();
        sa.close().expect("close");
        let again = Store::open(a.path(), OpenOptions::default()).expect("reopen");
        assert_eq!(again.replica_id(), id, "the new id is stored");
        assert!(again.get("c", "x").expect("get").is_some());
        assert!(template.open(a.path(), OpenOptions::default()).is_err());
    }
}
