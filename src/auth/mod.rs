//! Access control: who a caller is (a JWT, verified with the configured keys) and whether
//! their role may make the call (the policy table). [`Auth::authorize`] is the one decision
//! point; `crate::access` applies it to every request on the port, REST and gRPC alike, and
//! renders its refusals in each protocol's conventions.
//!
//! This module knows nothing of HTTP responses, the use cases or the store.
//!
//! - [`policy`]: roles, operations and the table of which role each call needs;
//! - [`token`]: verifying a token and reading its subject and role;
//! - [`keys`]: the PEM key and the JWKS (file or URL) it is verified with;
//! - `cache`: tokens that verified recently, so a repeated token costs a hash, not a signature.

mod cache;
pub mod keys;
pub mod policy;
pub mod token;

use std::{path::PathBuf, str::FromStr, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use axum::http::{HeaderValue, Method};
use jsonwebtoken::Algorithm;
use tokio_util::sync::CancellationToken;

use self::{keys::RemoteJwks, token::Verifier};
pub use self::{
    policy::{Access, Operation, Policy, Role},
    token::{BadToken, Principal},
};

/// Access-control settings (flags and environment variables).
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// RS256 public key (PEM) that tokens are verified with, as the older service used. With
    /// it, or a JWKS, every API call needs a token.
    #[arg(long, env = "AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<PathBuf>,
    /// JWKS document (a file) with the keys tokens are verified with, by `kid`.
    #[arg(long, env = "AUTH_JWKS_FILE")]
    pub auth_jwks_file: Option<PathBuf>,
    /// JWKS URL (http or https): fetched at start, refreshed in the background and when a
    /// token names an unknown `kid` (at most once per 10 s).
    #[arg(long, env = "AUTH_JWKS_URL")]
    pub auth_jwks_url: Option<String>,
    /// How often the JWKS URL is fetched again, in seconds.
    #[arg(long, env = "AUTH_JWKS_REFRESH_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub auth_jwks_refresh_seconds: u64,
    /// The `iss` a token must carry; any when unset.
    #[arg(long, env = "AUTH_ISSUER")]
    pub auth_issuer: Option<String>,
    /// The `aud` a token must carry; tokens' audiences are not checked when unset.
    #[arg(long, env = "AUTH_AUDIENCE")]
    pub auth_audience: Option<String>,
    /// Clock skew forgiven on `exp` and `nbf`, in seconds (0 to 300).
    #[arg(long, env = "AUTH_LEEWAY_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=300))]
    pub auth_leeway_seconds: u64,
    /// Signature algorithms accepted, comma-separated, from RS256, RS384, RS512, PS256, PS384,
    /// PS512, ES256, ES384 and EdDSA (never HMAC). The PEM key verifies RS256 only; each JWKS
    /// key verifies the one algorithm its `alg` or type names.
    #[arg(long, env = "AUTH_ALGORITHMS", default_value = "RS256,ES256,EdDSA")]
    pub auth_algorithms: String,
    /// Claim holding the caller's role as a string (a dotted path reaches into objects).
    #[arg(long, env = "AUTH_ROLE_CLAIM", default_value = "role")]
    pub auth_role_claim: String,
    /// Claim holding the caller's roles as an array (a dotted path reaches into objects).
    #[arg(long, env = "AUTH_ROLES_CLAIM", default_value = "roles")]
    pub auth_roles_claim: String,
    /// Make gRPC reflection need a viewer's token too (it is open by default).
    #[arg(long, env = "AUTH_CLOSE_REFLECTION", default_value_t = false)]
    pub auth_close_reflection: bool,
}

/// Who made a request that was let through: what handlers record as the actor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`; `None` without auth or without a `sub`.
    pub subject: Option<String>,
}

impl Caller {
    /// The caller of a request the guard let through, as handlers see it: anonymous when no
    /// guard ran (the router used without it).
    pub fn of(extensions: &axum::http::Extensions) -> Self {
        extensions.get::<Self>().cloned().unwrap_or_default()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No token came with the call: 401 / UNAUTHENTICATED.
    Missing,
    /// The token is not acceptable: 401 `invalid_token` / UNAUTHENTICATED.
    Invalid(BadToken),
    /// The token is good but its role is too low: 403 `insufficient_scope` /
    /// PERMISSION_DENIED.
    Insufficient {
        /// The role the call needs.
        needs: Role,
        /// The caller's role, if the token names one.
        has: Option<Role>,
        /// Who the caller is.
        subject: Option<String>,
    },
}

impl Refusal {
    /// What went wrong, for the caller and the log: never the token.
    pub fn detail(&self) -> String {
        match self {
            Self::Missing => "this call needs a token in the Authorization header".into(),
            Self::Invalid(why) => why.to_string(),
            Self::Insufficient { needs, has, .. } => match has {
                Some(has) => format!("this call needs the {needs} role; the token's is {has}"),
                None => format!("this call needs the {needs} role; the token names none"),
            },
        }
    }
}

/// The decision point: how tokens are verified (or that they are not needed) and which role
/// each call needs.
#[derive(Clone)]
pub struct Auth {
    verifier: Option<Arc<Verifier>>,
    policy: Policy,
}

impl Auth {
    /// No access control: every call is let through, with no actor.
    pub fn open() -> Self {
        Self {
            verifier: None,
            policy: Policy::default(),
        }
    }

    /// From the settings: open when no key is configured; a key that cannot be read or parsed
    /// is an error naming its setting.
    pub async fn from_settings(settings: &AuthSettings) -> anyhow::Result<Self> {
        let configured = settings.auth_public_key_file.is_some()
            || settings.auth_jwks_file.is_some()
            || settings.auth_jwks_url.is_some();
        if !configured {
            return Ok(Self::open());
        }
        let allowed = algorithms(&settings.auth_algorithms).context("AUTH_ALGORITHMS")?;
        let mut fixed = Vec::new();
        if let Some(path) = &settings.auth_public_key_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("AUTH_PUBLIC_KEY_FILE: cannot read {}", path.display()))?;
            if !allowed.contains(&Algorithm::RS256) {
                bail!(
                    "AUTH_PUBLIC_KEY_FILE: its key verifies RS256, which AUTH_ALGORITHMS leaves out"
                );
            }
            fixed.push(keys::pem_key(&pem).with_context(|| {
                format!("AUTH_PUBLIC_KEY_FILE: {} is unusable", path.display())
            })?);
        }
        if let Some(path) = &settings.auth_jwks_file {
            let document = std::fs::read(path)
                .with_context(|| format!("AUTH_JWKS_FILE: cannot read {}", path.display()))?;
            fixed.extend(
                keys::jwks_keys(&document, &allowed)
                    .with_context(|| format!("AUTH_JWKS_FILE: {} is unusable", path.display()))?,
            );
        }
        let remote = match &settings.auth_jwks_url {
            Some(url) => {
                let remote = RemoteJwks::load(
                    url.clone(),
                    allowed.clone(),
                    Duration::from_secs(settings.auth_jwks_refresh_seconds),
                )
                .await
                .map_err(|e| anyhow::anyhow!("AUTH_JWKS_URL: {e:#}"))?;
                Some(Arc::new(remote))
            }
            None => None,
        };
        let verifier = Verifier {
            fixed,
            remote,
            allowed,
            issuer: settings.auth_issuer.clone().filter(|s| !s.is_empty()),
            audience: settings.auth_audience.clone().filter(|s| !s.is_empty()),
            leeway: settings.auth_leeway_seconds,
            role_claim: settings.auth_role_claim.clone(),
            roles_claim: settings.auth_roles_claim.clone(),
            verified: Default::default(),
        };
        Ok(Self {
            verifier: Some(Arc::new(verifier)),
            policy: Policy {
                close_reflection: settings.auth_close_reflection,
            },
        })
    }

    /// Whether calls need tokens.
    pub fn is_on(&self) -> bool {
        self.verifier.is_some()
    }

    /// Decides a request: who makes it, or why it is refused. `authorization` is the
    /// `Authorization` header (gRPC metadata is the same header), with or without `Bearer `.
    pub async fn authorize(
        &self,
        method: &Method,
        path: &str,
        authorization: Option<&HeaderValue>,
    ) -> Result<Caller, Refusal> {
        let Some(verifier) = &self.verifier else {
            return Ok(Caller::default());
        };
        let operation = match self.policy.access(method, path) {
            Access::Open => return Ok(Caller::default()),
            Access::Needs(operation) => operation,
        };
        let token = authorization
            .map(|value| value.to_str().map(bearer))
            .transpose()
            .map_err(|_| Refusal::Invalid(BadToken("the Authorization header is not text")))?
            .filter(|token| !token.is_empty())
            .ok_or(Refusal::Missing)?;
        let principal = verifier.verify(token).await.map_err(Refusal::Invalid)?;
        let needs = operation.needs();
        if principal.role.is_some_and(|role| role >= needs) {
            Ok(Caller {
                subject: principal.subject,
            })
        } else {
            Err(Refusal::Insufficient {
                needs,
                has: principal.role,
                subject: principal.subject,
            })
        }
    }

    /// Keeps a JWKS URL's keys fresh until shutdown; `None` when there is none to refresh.
    pub fn refresher(
        &self,
        shutdown: CancellationToken,
    ) -> Option<impl Future<Output = ()> + Send + 'static + use<>> {
        let remote = self.verifier.as_ref()?.remote.clone()?;
        Some(remote.run(shutdown))
    }
}

/// The token in an `Authorization` value: after `Bearer ` (any case), or the whole value, as
/// the older service's clients send it.
fn bearer(value: &str) -> &str {
    let value = value.trim();
    match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim_start(),
        _ => value,
    }
}

/// The allow-list from its comma-separated names; HMAC is never allowed.
fn algorithms(list: &str) -> anyhow::Result<Vec<Algorithm>> {
    let mut allowed = Vec::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let algorithm = Algorithm::from_str(name)
            .map_err(|_| anyhow::anyhow!("{name:?} is not a signature algorithm"))?;
        if matches!(
            algorithm,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            bail!("{name} is symmetric: the service holds only public keys");
        }
        allowed.push(algorithm);
    }
    if allowed.is_empty() {
        bail!("no algorithm is allowed");
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_comes_raw_or_after_bearer_in_any_case() {
        assert_eq!(bearer("abc.def.ghi"), "abc.def.ghi");
        assert_eq!(bearer("Bearer abc.def.ghi"), "abc.def.ghi");
        assert_eq!(bearer("bearer   abc"), "abc");
        assert_eq!(bearer("Bearer"), "Bearer");
    }

    #[test]
    fn hmac_and_unknown_algorithms_cannot_be_allowed() {
        assert_eq!(
            algorithms("RS256, EdDSA").unwrap(),
            [Algorithm::RS256, Algorithm::EdDSA]
        );
        for bad in ["HS256", "none", "RS256,XX", " , "] {
            assert!(algorithms(bad).is_err(), "{bad} was allowed");
        }
    }
}
