//! `meshlite keys`: an anon and a service_role key for a JWT secret, as the seeds'
//! `generate-keys.sh` (and Supabase's self-hosting guide) makes them: HS256 JWTs with
//! `{"role", "iss": "supabase", "iat", "exp"}`. The node verifies them with the same secret
//! (`JWT_SECRET`); apps pass them as `ANON_KEY` / `SERVICE_ROLE_KEY`.

use super::output::{CliError, print_json};
use crate::auth::jwt::sign_key;
use crate::auth::{Role, unix_now};

/// Five years, the validity of Supabase's self-hosting example keys.
pub const DEFAULT_EXPIRY_SECONDS: u64 = 5 * 365 * 24 * 3600;

/// `meshlite keys` arguments.
#[derive(Debug, clap::Args)]
pub struct KeysArgs {
    /// The HS256 secret the node runs with (at least 32 characters).
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: String,
    /// Validity of the keys in seconds [default: five years].
    #[arg(long, env = "JWT_EXPIRY")]
    expiry: Option<u64>,
}

/// Prints `{"anon_key", "service_role_key", "iat", "exp"}`.
pub(crate) fn run(args: &KeysArgs) -> Result<(), CliError> {
    let now = unix_now();
    let expiry = args.expiry.unwrap_or(DEFAULT_EXPIRY_SECONDS);
    if expiry == 0 {
        return Err(CliError::msg("--expiry must be at least 1 second"));
    }
    let anon = sign_key(&args.secret, Role::Anon, now, expiry)?;
    let service = sign_key(&args.secret, Role::ServiceRole, now, expiry)?;
    print_json(&serde_json::json!({
        "anon_key": anon,
        "service_role_key": service,
        "iat": now,
        "exp": now.saturating_add(i64::try_from(expiry).unwrap_or(i64::MAX)),
    }))
}
