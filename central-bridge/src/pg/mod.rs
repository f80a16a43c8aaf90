//! The Postgres connection: URL parsing (libpq's `sslmode`), TLS, and a client whose driver task
//! is owned and stopped with it.

pub mod ident;
pub mod tls;

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub use ident::{Ident, IdentError};
pub use tls::SslMode;

/// Value of `application_name` on the bridge's sessions (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "meshlite-bridge";

/// A parsed `DATABASE_URL`.
#[derive(Clone)]
pub struct PgTarget {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    root_cert: Option<String>,
    redacted: String,
}

impl std::fmt::Debug for PgTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget")
            .field("url", &self.redacted)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

/// Error parsing a URL or connecting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// The URL is not a Postgres URL the bridge accepts.
    #[error("invalid database URL {url}: {reason}")]
    Url {
        /// The URL with its password hidden.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The server could not be reached or refused the session.
    #[error("cannot connect to Postgres at {url}: {source}")]
    Connect {
        /// The URL with its password hidden.
        url: String,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PgTarget {
    /// Parses `postgres://` or `postgresql://` URLs. `sslmode` (libpq's five values) and
    /// `sslrootcert` are taken out of the query and handled by the bridge; other parameters go
    /// to the driver.
    pub fn parse(url: &str, connect_timeout: Duration) -> Result<PgTarget, PgError> {
        let redacted = redact(url);
        let bad = |reason: String| PgError::Url {
            url: redacted.clone(),
            reason,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad("expected postgres:// or postgresql://".into()));
        }
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut ssl_mode = SslMode::default();
        let mut root_cert = None;
        let mut rest = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("sslmode", v)) => ssl_mode = v.parse().map_err(bad)?,
                Some(("sslrootcert", v)) => root_cert = Some(v.to_owned()),
                _ => rest.push(pair),
            }
        }
        let driver_url = if rest.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", rest.join("&"))
        };
        let mut config: tokio_postgres::Config = driver_url
            .parse()
            .map_err(|e: tokio_postgres::Error| bad(e.to_string()))?;
        config
            .ssl_mode(ssl_mode.driver_mode())
            .application_name(APPLICATION_NAME)
            .connect_timeout(connect_timeout);
        Ok(PgTarget {
            config,
            ssl_mode,
            root_cert,
            redacted,
        })
    }

    /// The URL with its password replaced by `****` (for logs and errors).
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The TLS mode.
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// Opens a session. Its driver runs on a task owned by the returned [`PgConn`].
    pub async fn connect(&self) -> Result<PgConn, PgError> {
        let fail = |source| PgError::Connect {
            url: self.redacted.clone(),
            source,
        };
        let tls = tls::client_config(self.ssl_mode, self.root_cert.as_deref())?;
        let (client, driver) = match tls {
            None => {
                let (client, conn) = self.config.connect(NoTls).await.map_err(fail)?;
                (client, tokio::spawn(drive(conn)))
            }
            Some(cfg) => {
                let (client, conn) = self
                    .config
                    .connect(tls::MakeRustls::new(cfg))
                    .await
                    .map_err(fail)?;
                (client, tokio::spawn(drive(conn)))
            }
        };
        Ok(PgConn { client, driver })
    }
}

async fn drive<F>(conn: F)
where
    F: std::future::Future<Output = Result<(), tokio_postgres::Error>>,
{
    if let Err(e) = conn.await {
        tracing::warn!(error = %e, "Postgres connection closed with an error");
    }
}

/// Hides the password of a URL: `postgres://user:****@host/db`.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    let authority = &url[scheme_end..authority_end];
    match authority.rfind('@') {
        Some(at) => match authority[..at].split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:****{}",
                &url[..scheme_end],
                &url[scheme_end + at..]
            ),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// A Postgres session; the connection driver task stops when this is dropped.
#[derive(Debug)]
pub struct PgConn {
    client: Client,
    driver: JoinHandle<()>,
}

impl PgConn {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The client, mutably (transactions need it).
    pub fn client_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_both_schemes_and_libpq_sslmodes() {
        let t = Duration::from_secs(5);
        let a = PgTarget::parse("postgres://u:secret@db.example:6543/postgres", t).unwrap();
        assert_eq!(a.ssl_mode(), SslMode::Prefer);
        assert_eq!(a.redacted(), "postgres://u:****@db.example:6543/postgres");
        let b = PgTarget::parse(
            "postgresql://u:p@h/db?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=3",
            t,
        )
        .unwrap();
        assert_eq!(b.ssl_mode(), SslMode::VerifyFull);
        assert_eq!(b.root_cert.as_deref(), Some("/ca.pem"));
        assert!(!format!("{b:?}").contains("secret"));
        for bad in [
            "mysql://u@h/db",
            "postgres://u@h/db?sslmode=sometimes",
            "postgres://u@h:notaport/db",
        ] {
            let e = PgTarget::parse(bad, t).unwrap_err();
            assert!(matches!(e, PgError::Url { .. }), "{bad}: {e}");
        }
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact("postgres://u:p@ss@h/db?x=1"),
            "postgres://u:****@h/db?x=1"
        );
    }
}
