//! [`Db`]: a transaction (or savepoint) of the writer connection together with the statements
//! already prepared on that connection, so each SQL text is parsed and planned once per
//! connection instead of on every call (tokio-postgres prepares a `&str` query anew each time:
//! one extra round trip and a parse/plan per statement, measured in benches/README.md).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use futures_util::SinkExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row, Statement, Transaction};

/// Statements prepared on one connection, by SQL text. Cleared when the connection is replaced.
#[derive(Debug, Default)]
pub struct Prepared(Mutex<HashMap<String, Statement>>);

impl Prepared {
    fn get(&self, sql: &str) -> Option<Statement> {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(sql).cloned()
    }

    fn put(&self, sql: &str, statement: Statement) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        map.insert(sql.to_owned(), statement);
    }

    /// Forgets every statement (the connection they belong to is gone).
    pub fn clear(&self) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

/// A transaction and its connection's prepared statements.
#[derive(Clone, Copy)]
pub struct Db<'a, 'b> {
    tx: &'a Transaction<'b>,
    prepared: &'a Prepared,
}

impl std::fmt::Debug for Db<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

type Params<'p> = &'p [&'p (dyn ToSql + Sync)];

impl<'a, 'b> Db<'a, 'b> {
    /// `tx` with the statements of its connection.
    pub fn new(tx: &'a Transaction<'b>, prepared: &'a Prepared) -> Self {
        Self { tx, prepared }
    }

    async fn statement(&self, sql: &str) -> Result<Statement, Error> {
        if let Some(statement) = self.prepared.get(sql) {
            return Ok(statement);
        }
        let statement = self.tx.prepare(sql).await?;
        self.prepared.put(sql, statement.clone());
        Ok(statement)
    }

    /// Runs a statement; the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: Params<'_>) -> Result<u64, Error> {
        self.tx.execute(&self.statement(sql).await?, params).await
    }

    /// Runs a query.
    pub async fn query(&self, sql: &str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        self.tx.query(&self.statement(sql).await?, params).await
    }

    /// Runs statements by the simple protocol (no parameters, nothing prepared).
    pub async fn batch_execute(&self, sql: &str) -> Result<(), Error> {
        self.tx.batch_execute(sql).await
    }

    /// Runs `COPY … FROM STDIN` with `data` (text or binary, as the statement says); the number
    /// of rows copied.
    pub async fn copy_in(&self, sql: &str, data: Vec<u8>) -> Result<u64, Error> {
        let statement = self.statement(sql).await?;
        let sink = self
            .tx
            .copy_in::<_, std::io::Cursor<Vec<u8>>>(&statement)
            .await?;
        let mut sink = std::pin::pin!(sink);
        sink.send(std::io::Cursor::new(data)).await?;
        sink.as_mut().finish().await
    }

    /// Runs a query that returns exactly one row.
    pub async fn query_one(&self, sql: &str, params: Params<'_>) -> Result<Row, Error> {
        self.tx.query_one(&self.statement(sql).await?, params).await
    }

    /// Runs a query that returns at most one row.
    pub async fn query_opt(&self, sql: &str, params: Params<'_>) -> Result<Option<Row>, Error> {
        self.tx.query_opt(&self.statement(sql).await?, params).await
    }
}
