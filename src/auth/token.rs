//! Verifying a token: its signature with an allowed algorithm and a known key, `exp`
//! (required), `nbf`, and `iss` / `aud` when configured; then who it names and their role.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use super::{
    cache::Verified,
    keys::{Key, RemoteJwks},
    policy::Role,
};

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The `sub` claim, when the token has one.
    pub subject: Option<String>,
    /// The highest role its role claims name; `None` when they name none.
    pub role: Option<Role>,
}

/// Why a token was not accepted, as a sentence that never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadToken(pub &'static str);

/// How tokens are checked.
pub(crate) struct Verifier {
    /// The PEM key and the JWKS file's keys.
    pub(crate) fixed: Vec<Key>,
    pub(crate) remote: Option<Arc<RemoteJwks>>,
    pub(crate) allowed: Vec<Algorithm>,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    /// Seconds of clock skew forgiven on `exp` and `nbf`.
    pub(crate) leeway: u64,
    /// Dotted path of the claim holding one role as a string.
    pub(crate) role_claim: String,
    /// Dotted path of the claim holding roles as an array.
    pub(crate) roles_claim: String,
    /// Tokens that verified recently.
    pub(crate) verified: Verified<Principal>,
}

impl Verifier {
    /// Verifies `token` and reads its subject and role; a token that verified recently is
    /// taken from the cache.
    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, BadToken> {
        let now = i64::try_from(jsonwebtoken::get_current_timestamp()).unwrap_or(i64::MAX);
        let generation = self.remote.as_ref().map_or(0, |r| r.generation());
        if let Some(principal) = self.verified.get(token, now, generation) {
            return Ok(principal);
        }
        let (principal, expires) = self.verify_signature(token).await?;
        self.verified
            .put(token, principal.clone(), expires, now, generation);
        Ok(principal)
    }

    /// Verifies `token` with its key; its principal and until when it may be trusted (Unix
    /// seconds: its `exp` plus the leeway).
    async fn verify_signature(&self, token: &str) -> Result<(Principal, i64), BadToken> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| BadToken("the token is malformed or its algorithm is not supported"))?;
        if !self.allowed.contains(&header.alg) {
            return Err(BadToken("the token's algorithm is not accepted"));
        }
        let kid = header.kid.as_deref();
        let mut candidates = self.candidates(kid, header.alg);
        if candidates.is_empty()
            && let Some(remote) = &self.remote
        {
            remote.refetch_for_unknown_kid().await;
            candidates = self.candidates(kid, header.alg);
        }
        if candidates.is_empty() {
            return Err(BadToken("no key is known for the token's key id"));
        }
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(
                token,
                &key.key,
                &self.validation(key.algorithm),
            ) {
                Ok(data) => {
                    let exp = data
                        .claims
                        .get("exp")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0);
                    let leeway = i64::try_from(self.leeway).unwrap_or(0);
                    return Ok((self.principal(&data.claims), exp as i64 + leeway));
                }
                // Another candidate may have signed it.
                Err(error) if *error.kind() == ErrorKind::InvalidSignature => {}
                // The signature held (it is checked first), a claim did not.
                Err(error) => return Err(bad(error.kind())),
            }
        }
        Err(BadToken("the token's signature does not verify"))
    }

    /// The keys that may have signed a token with this key id and algorithm: those with that
    /// id, or with none (the PEM key); a token without an id may be any key's.
    fn candidates(&self, kid: Option<&str>, algorithm: Algorithm) -> Vec<Key> {
        let remote = self.remote.as_ref().map(|r| r.keys());
        self.fixed
            .iter()
            .chain(remote.iter().flat_map(|keys| keys.iter()))
            .filter(|key| key.algorithm == algorithm)
            .filter(|key| kid.is_none() || key.kid.is_none() || key.kid.as_deref() == kid)
            .cloned()
            .collect()
    }

    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        match &self.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        validation
    }

    fn principal(&self, claims: &Map<String, Value>) -> Principal {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let single = claim(claims, &self.role_claim)
            .and_then(Value::as_str)
            .and_then(Role::from_claim);
        let listed = claim(claims, &self.roles_claim)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter_map(Role::from_claim);
        Principal {
            subject,
            role: single.into_iter().chain(listed).max(),
        }
    }
}

/// The claim at a dotted path (`realm_access.roles`), or at the name itself when it has a dot.
fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

fn bad(kind: &ErrorKind) -> BadToken {
    BadToken(match kind {
        ErrorKind::ExpiredSignature => "the token has expired",
        ErrorKind::ImmatureSignature => "the token is not valid yet",
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted",
        ErrorKind::InvalidAudience => "the token's audience is not accepted",
        ErrorKind::MissingRequiredClaim(_) => "the token has no exp claim",
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
            "the token's algorithm is not accepted"
        }
        ErrorKind::InvalidSignature => "the token's signature does not verify",
        ErrorKind::InvalidClaimFormat(_) => "a claim of the token has the wrong type",
        _ => "the token is malformed",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn verifier() -> Verifier {
        Verifier {
            fixed: Vec::new(),
            remote: None,
            allowed: vec![Algorithm::RS256],
            issuer: None,
            audience: None,
            leeway: 0,
            role_claim: "role".into(),
            roles_claim: "realm_access.roles".into(),
            verified: Verified::default(),
        }
    }

    #[test]
    fn the_highest_role_named_by_either_claim_counts() {
        let claims = json!({"sub": "ana", "role": "viewer",
            "realm_access": {"roles": ["offline", "operator"]}});
        let principal = verifier().principal(claims.as_object().unwrap());
        assert_eq!(principal.subject.as_deref(), Some("ana"));
        assert_eq!(principal.role, Some(Role::Operator));
        let none = json!({"role": ["admin"], "sub": ""});
        let principal = verifier().principal(none.as_object().unwrap());
        assert_eq!(
            principal,
            Principal {
                subject: None,
                role: None
            },
            "a role must be a string"
        );
    }
}
