//! Fingerprints: fixed-size stand-ins for the strings that identify customers, dimension
//! sets, idempotency keys and unique_count values, so that the dataflow moves and keys
//! its state by plain integers instead of heap strings.
//!
//! They are XXH3 hashes, stable across runs, machines and versions of this crate.
//! - Customer and dimension fingerprints (64 bits) never stand in silently: every worker
//!   that routes by one also registers the text behind it, and a second text with the
//!   same fingerprint stops the job with an error naming both (see `om_operators::names`).
//! - Idempotency keys and unique_count values use 128 bits and are not checked: two
//!   different ids of one tenant collide with probability about n^2 / 2^129 (10^-20 for
//!   a billion keys), below the rate of undetected memory errors.

use twox_hash::xxhash3_64;
use twox_hash::xxhash3_128;

/// (tenant, customer) -> the customer's fingerprint; it routes the customer's state.
pub fn customer(tenant_id: &str, customer_id: &str) -> u64 {
    xxhash3_64::Hasher::oneshot_with_seed(
        xxhash3_64::Hasher::oneshot(tenant_id.as_bytes()),
        customer_id.as_bytes(),
    )
}

/// Canonical dimensions JSON -> its fingerprint.
pub fn dimensions(text: &str) -> u64 {
    xxhash3_64::Hasher::oneshot(text.as_bytes())
}

/// (tenant, event id) -> the idempotency key's fingerprint.
pub fn idempotency_key(tenant_id: &str, id: &str) -> u128 {
    xxhash3_128::Hasher::oneshot_with_seed(
        xxhash3_64::Hasher::oneshot(tenant_id.as_bytes()),
        id.as_bytes(),
    )
}

/// Canonical scalar text of a unique_count value -> its fingerprint.
pub fn scalar(text: &str) -> u128 {
    xxhash3_128::Hasher::oneshot(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_separate_the_fields() {
        assert_ne!(customer("ab", "c"), customer("a", "bc"));
        assert_ne!(idempotency_key("ab", "c"), idempotency_key("a", "bc"));
        assert_eq!(customer("t", "c"), customer("t", "c"));
        // Stable across builds: the value is part of routing and of checkpoints.
        assert_eq!(dimensions("{}"), dimensions("{}"));
    }
}
