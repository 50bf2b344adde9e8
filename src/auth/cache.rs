//! Tokens verified recently. Clients send the same token on call after call, and checking an
//! RSA or ECDSA signature costs tens of microseconds of CPU (`cargo bench --bench auth`); a token
//! that verified is remembered, by its SHA-256, until it expires or [`MAX_AGE`] passes, whichever
//! comes first, and forgotten when the JWKS URL's keys change. Only tokens that verified are
//! kept, so garbage cannot fill the cache, and it holds at most [`CAPACITY`] of them.

use std::{collections::HashMap, sync::Mutex};

use sha2::{Digest, Sha256};

/// Longest a verified token is trusted without checking its signature again, in seconds: how
/// long a key removed from a JWKS may still be honoured for a token it signed.
pub(crate) const MAX_AGE: i64 = 60;
/// Most tokens remembered; when full, the cache starts over.
const CAPACITY: usize = 10_000;

struct Entry<T> {
    principal: T,
    /// Unix seconds after which the entry is stale.
    until: i64,
    /// The key set it was verified with.
    generation: u64,
}

/// The cache, of what each token verified as (`T`: its principal).
pub(crate) struct Verified<T> {
    entries: Mutex<HashMap<[u8; 32], Entry<T>>>,
}

impl<T> Default for Verified<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl<T: Clone> Verified<T> {
    /// The principal of `token`, if it verified with the key set of `generation` and is still
    /// fresh at `now` (Unix seconds).
    pub(crate) fn get(&self, token: &str, now: i64, generation: u64) -> Option<T> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(&digest(token))
            .filter(|entry| entry.generation == generation && now < entry.until)
            .map(|entry| entry.principal.clone())
    }

    /// Remembers that `token` verified at `now` as `principal`, trusted until `expires`.
    pub(crate) fn put(&self, token: &str, principal: T, expires: i64, now: i64, generation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            digest(token),
            Entry {
                principal,
                until: expires.min(now + MAX_AGE),
                generation,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_lasts_until_its_token_expires_or_its_age_runs_out_or_the_keys_change() {
        let cache = Verified::default();
        let principal = "ana".to_owned();
        cache.put("short", principal.clone(), 1_010, 1_000, 0);
        cache.put("long", principal.clone(), 10_000, 1_000, 0);
        assert_eq!(cache.get("short", 1_009, 0), Some(principal.clone()));
        assert_eq!(cache.get("short", 1_010, 0), None, "the token expired");
        assert_eq!(
            cache.get("long", 1_000 + MAX_AGE - 1, 0),
            Some(principal.clone())
        );
        assert_eq!(
            cache.get("long", 1_000 + MAX_AGE, 0),
            None,
            "checked again after MAX_AGE"
        );
        assert_eq!(cache.get("long", 1_001, 1), None, "the keys changed");
        assert_eq!(cache.get("other", 1_001, 0), None);
    }
}
