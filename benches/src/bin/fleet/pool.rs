//! Keep-alive HTTP/1.1 connections to one node, reused across writes (`--keep-alive`).
//!
//! Without it every write opens its own TCP connection, so each node also pays an accept, a
//! connection set-up and a close per write it originates; an app on a device keeps its
//! connection alive (supabase-js and every HTTP client library do by default). The pool grows
//! to as many connections as writes are in flight at once (an open-loop writer never waits for
//! a connection), and a connection that failed is dropped rather than returned.

use std::net::SocketAddr;
use std::sync::Mutex;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use meshlite_benches::daemon::Conn;
use serde_json::Value;

/// Idle keep-alive connections to one node.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub fn new(addr: SocketAddr) -> Pool {
        Pool {
            addr,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// `POST path` with a JSON body on an idle connection, or a new one when none is idle.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<(StatusCode, Bytes)> {
        let idle = self.idle.lock().map(|mut v| v.pop()).unwrap_or(None);
        let mut conn = match idle {
            Some(conn) => conn,
            None => Conn::open(self.addr).await?,
        };
        let out = conn.call(Method::POST, path, "", Some(body)).await?;
        if let Ok(mut v) = self.idle.lock() {
            v.push(conn);
        }
        Ok(out)
    }

    /// Connections opened so far that are idle now (all of them once the writes are done).
    pub fn size(&self) -> usize {
        self.idle.lock().map_or(0, |v| v.len())
    }
}
