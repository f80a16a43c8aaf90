//! Fleet identity files: init, issue, renew, load, and the checks done on load.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use meshlite_mesh::fleet::{
    self, CertSpec, FleetCa, FleetError, IssueOptions, NodeIdentity, NodeName,
};

type TestResult = anyhow::Result<()>;

#[test]
fn init_then_issue_makes_a_loadable_bundle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let info = fleet::init(dir.path())?;
    assert_eq!(info.cluster_id.to_string().len(), 16);
    assert!(info.ca_fingerprint.starts_with("sha256:"));
    let key_mode = fs::metadata(dir.path().join("ca.key"))?
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let issued = fleet::issue(dir.path(), "pi-1", 30)?;
    assert_eq!(issued.bundle_dir, dir.path().join("nodes/pi-1"));
    for file in ["node.pem", "node.key", "ca.pem", "fleet.toml"] {
        assert!(issued.bundle_dir.join(file).exists(), "{file}");
    }
    let node_key_mode = fs::metadata(issued.bundle_dir.join("node.key"))?
        .permissions()
        .mode();
    assert_eq!(node_key_mode & 0o777, 0o600);

    let identity = fleet::load_node_identity(&issued.bundle_dir)?;
    assert_eq!(identity.cluster_id(), info.cluster_id);
    assert_eq!(identity.node_id(), issued.node_id);
    assert_eq!(identity.node_name().as_str(), "pi-1");
    Ok(())
}

#[test]
fn init_refuses_to_overwrite_a_ca() -> TestResult {
    let dir = tempfile::tempdir()?;
    fleet::init(dir.path())?;
    let again = fleet::init(dir.path());
    assert!(
        matches!(again, Err(FleetError::AlreadyInitialized { .. })),
        "{again:?}"
    );
    Ok(())
}

#[test]
fn issue_validates_names_and_days() -> TestResult {
    let dir = tempfile::tempdir()?;
    fleet::init(dir.path())?;
    for bad in ["../evil", "Pi", "a b", ""] {
        let result = fleet::issue(dir.path(), bad, 30);
        assert!(
            matches!(result, Err(FleetError::InvalidId(_))),
            "{bad}: {result:?}"
        );
    }
    let result = fleet::issue(dir.path(), "ok", 0);
    assert!(
        matches!(result, Err(FleetError::InvalidDays { days: 0 })),
        "{result:?}"
    );
    assert!(!dir.path().join("nodes/ok").exists());
    Ok(())
}

#[test]
fn renew_keeps_the_node_id_and_reissue_without_renew_is_refused() -> TestResult {
    let dir = tempfile::tempdir()?;
    fleet::init(dir.path())?;
    let first = fleet::issue(dir.path(), "edge", 30)?;
    let again = fleet::issue(dir.path(), "edge", 30);
    assert!(
        matches!(again, Err(FleetError::BundleExists { .. })),
        "{again:?}"
    );
    let old_cert = fs::read_to_string(first.bundle_dir.join("node.pem"))?;

    let renewed = fleet::issue_with(
        dir.path(),
        "edge",
        &IssueOptions {
            days: 60,
            renew: true,
        },
    )?;
    assert!(renewed.renewed);
    assert_eq!(renewed.node_id, first.node_id);
    assert_ne!(
        fs::read_to_string(first.bundle_dir.join("node.pem"))?,
        old_cert
    );
    assert_eq!(
        fleet::load_node_identity(&renewed.bundle_dir)?.node_id(),
        first.node_id
    );
    Ok(())
}

#[test]
fn load_refuses_a_bundle_from_another_fleet() -> TestResult {
    let a = tempfile::tempdir()?;
    let b = tempfile::tempdir()?;
    fleet::init(a.path())?;
    fleet::init(b.path())?;
    let node = fleet::issue(a.path(), "n", 30)?;
    // Swap in the other fleet's CA: the certificate no longer verifies.
    fs::copy(b.path().join("ca.pem"), node.bundle_dir.join("ca.pem"))?;
    let result = fleet::load_node_identity(&node.bundle_dir);
    assert!(
        matches!(result, Err(FleetError::Untrusted { .. })),
        "{result:?}"
    );
    // Swap in the other fleet's fleet.toml: the cluster ids disagree.
    fs::copy(a.path().join("ca.pem"), node.bundle_dir.join("ca.pem"))?;
    fs::copy(
        b.path().join("fleet.toml"),
        node.bundle_dir.join("fleet.toml"),
    )?;
    let result = fleet::load_node_identity(&node.bundle_dir);
    assert!(
        matches!(
            result,
            Err(FleetError::Mismatch {
                field: "cluster_id",
                ..
            })
        ),
        "{result:?}"
    );
    Ok(())
}

#[test]
fn load_refuses_a_key_that_does_not_match() -> TestResult {
    let dir = tempfile::tempdir()?;
    fleet::init(dir.path())?;
    let one = fleet::issue(dir.path(), "one", 30)?;
    let two = fleet::issue(dir.path(), "two", 30)?;
    fs::copy(
        two.bundle_dir.join("node.key"),
        one.bundle_dir.join("node.key"),
    )?;
    let result = fleet::load_node_identity(&one.bundle_dir);
    assert!(matches!(result, Err(FleetError::KeyMismatch)), "{result:?}");
    Ok(())
}

#[test]
fn expired_certificates_are_refused_on_load() -> TestResult {
    let dir = tempfile::tempdir()?;
    fleet::init(dir.path())?;
    let ca = FleetCa::load(dir.path())?;
    let mut spec = CertSpec::new(&ca, NodeName::new("old")?, 1);
    spec.not_before = SystemTime::now() - Duration::from_secs(10 * 86_400);
    spec.not_after = SystemTime::now() - Duration::from_secs(86_400);
    let issued = ca.issue_cert(&spec)?;
    let identity = NodeIdentity::from_pem(&issued.cert_pem, &issued.key_pem, ca.trusted_pem())?;
    let result = identity.verify_at(SystemTime::now());
    assert!(
        matches!(result, Err(FleetError::Untrusted { .. })),
        "{result:?}"
    );
    identity.verify_at(spec.not_before + Duration::from_secs(3600))?;
    Ok(())
}

#[test]
fn a_ca_pem_with_two_cas_trusts_both() -> TestResult {
    let old = tempfile::tempdir()?;
    let new = tempfile::tempdir()?;
    let info = fleet::init(old.path())?;
    fleet::init_with(
        new.path(),
        &fleet::InitOptions {
            cluster_id: Some(info.cluster_id),
            ..Default::default()
        },
    )?;
    let both = format!(
        "{}{}",
        fs::read_to_string(new.path().join("ca.pem"))?,
        fs::read_to_string(old.path().join("ca.pem"))?
    );
    fs::write(new.path().join("ca.pem"), &both)?;
    let from_new = fleet::issue(new.path(), "fresh", 30)?;
    let from_old = fleet::issue(old.path(), "legacy", 30)?;
    fs::write(from_old.bundle_dir.join("ca.pem"), &both)?;
    assert_eq!(
        fleet::load_node_identity(&from_new.bundle_dir)?.cluster_id(),
        info.cluster_id
    );
    assert_eq!(
        fleet::load_node_identity(&from_old.bundle_dir)?.cluster_id(),
        info.cluster_id
    );
    Ok(())
}
