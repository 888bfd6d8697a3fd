//! What a client may do: the scope of an API key, and the limits of one query. Shared
//! by the HTTP API ([`crate::serve`]) and the PostgreSQL front end ([`crate::pg`]).

use om_model::config::{ApiKey, KeyScope};
use om_queries::Scope;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Most rows a query may return.
pub const MAX_ROWS: usize = 100_000;
/// Longest a query may run, and longest an ingest request waits for its verdicts.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The scope of `key` (surrounding whitespace ignored): its SHA-256 looked up in `keys`.
pub fn key_scope(keys: &[ApiKey], key: &str) -> Option<Scope> {
    let hash: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
    let found = keys.iter().find(|k| k.sha256 == hash)?;
    Some(match &found.scope {
        KeyScope::Tenant(t) => Scope::Tenant(t.clone()),
        KeyScope::Admin => Scope::All,
    })
}
