//! TLS to Postgres with libpq's sslmodes, against a real server with a certificate for
//! `localhost` issued by a test CA.

use std::time::{Duration, Instant};

use meshlite_bridge::pg::PgTarget;
use meshlite_fixtures::postgres::{PgCluster, PgServer};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("self-signed CA").pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// Turns TLS on in `cluster` with a certificate for `localhost` from `ca`.
fn enable_tls(cluster: &PgCluster, ca: &Ca) {
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &ca.issuer)
        .expect("server certificate");
    let cert_path = cluster.write_private_file("server.crt", cert.pem().as_bytes());
    let key_path = cluster.write_private_file("server.key", key.serialize_pem().as_bytes());
    // ALTER SYSTEM refuses to run in a transaction block: one statement per psql call.
    for setting in [
        format!("ssl_cert_file = '{}'", cert_path.display()),
        format!("ssl_key_file = '{}'", key_path.display()),
        "ssl = on".to_owned(),
    ] {
        PgServer::psql(&cluster.url(), &format!("ALTER SYSTEM SET {setting}"));
    }
    PgServer::psql(&cluster.url(), "SELECT pg_reload_conf()");
    let deadline = Instant::now() + Duration::from_secs(20);
    while PgServer::psql(&cluster.url(), "SHOW ssl").trim() != "on" {
        assert!(Instant::now() < deadline, "ssl never turned on");
        std::thread::sleep(Duration::from_millis(100));
    }
}

async fn uses_tls(url: &str) -> Result<bool, String> {
    let target = PgTarget::parse(url, Duration::from_secs(10)).map_err(|e| e.to_string())?;
    let conn = target.connect().await.map_err(|e| format!("{e:?}"))?;
    let row = conn
        .client()
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn sslmodes_encrypt_and_verify_like_libpq() {
    let cluster = PgCluster::start();
    let port = cluster.port();
    let url =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");
    // Without TLS on the server: prefer falls back to plain, require refuses.
    assert_eq!(
        uses_tls(&url("127.0.0.1", "sslmode=prefer")).await,
        Ok(false)
    );
    assert!(
        uses_tls(&url("127.0.0.1", "sslmode=require"))
            .await
            .is_err()
    );

    let ca = ca();
    enable_tls(&cluster, &ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let other_file = dir.path().join("other.pem");
    std::fs::write(&other_file, self::ca().pem).unwrap();

    let root = |mode: &str, file: &std::path::Path| {
        format!("sslmode={mode}&sslrootcert={}", file.display())
    };

    assert_eq!(
        uses_tls(&url("127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );
    assert_eq!(
        uses_tls(&url("127.0.0.1", "sslmode=prefer")).await,
        Ok(true)
    );
    assert_eq!(
        uses_tls(&url("127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    assert_eq!(
        uses_tls(&url("localhost", &root("verify-full", &ca_file))).await,
        Ok(true)
    );
    // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca accepts.
    let wrong_name = uses_tls(&url("127.0.0.1", &root("verify-full", &ca_file))).await;
    assert!(wrong_name.is_err(), "{wrong_name:?}");
    assert_eq!(
        uses_tls(&url("127.0.0.1", &root("verify-ca", &ca_file))).await,
        Ok(true)
    );
    // A CA that did not issue the server's certificate is refused by both verifying modes
    // (same empty subject as the real CA, so webpki reports a bad signature).
    for mode in ["verify-ca", "verify-full"] {
        let foreign = uses_tls(&url("localhost", &root(mode, &other_file))).await;
        let e = foreign.unwrap_err();
        assert!(e.contains("InvalidCertificate"), "{mode}: {e}");
    }
}
