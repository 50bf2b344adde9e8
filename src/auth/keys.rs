//! The keys tokens are verified with: an RS256 public key in a PEM file (what the older service
//! used), a JWKS file, and a JWKS fetched over HTTP(S), cached by `kid` and refreshed in the
//! background and when a token names a `kid` not seen yet (at most once per
//! [`MIN_REFETCH_GAP`], so unknown ids cannot make the service hammer its identity provider).
//!
//! Each key verifies exactly one algorithm, fixed when it is loaded (a JWK's `alg`, else the one
//! its type implies), so a token cannot pick how its key is used: the classic confusion of an
//! HMAC "signed" with the RSA public key as the secret has no key to verify against.

use std::{
    str::FromStr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse},
};
use tokio_util::sync::CancellationToken;

/// Fewest time between two fetches of the JWKS URL prompted by unknown key ids.
pub const MIN_REFETCH_GAP: Duration = Duration::from_secs(10);
/// Largest JWKS document read from the URL.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// One verification key.
#[derive(Clone)]
pub(crate) struct Key {
    /// The JWK's `kid`; `None` for the PEM key, which verifies tokens without one.
    pub(crate) kid: Option<String>,
    /// The one algorithm it verifies.
    pub(crate) algorithm: Algorithm,
    pub(crate) key: DecodingKey,
}

/// The RS256 key in a PEM file.
pub(crate) fn pem_key(pem: &[u8]) -> anyhow::Result<Key> {
    let key = DecodingKey::from_rsa_pem(pem).context("not an RSA public key in PEM")?;
    Ok(Key {
        kid: None,
        algorithm: Algorithm::RS256,
        key,
    })
}

/// The signing keys of a JWKS document whose algorithm is allowed. Encryption keys, symmetric
/// keys and keys of other algorithms are left out; a document with no usable key is an error.
pub(crate) fn jwks_keys(document: &[u8], allowed: &[Algorithm]) -> anyhow::Result<Vec<Key>> {
    let set: JwkSet = serde_json::from_slice(document).context("not a JWKS document")?;
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter_map(|jwk| match jwk_key(jwk, allowed) {
            Ok(key) => Some(key),
            Err(why) => {
                tracing::debug!(kid = ?jwk.common.key_id, %why, "JWKS key left out");
                None
            }
        })
        .collect();
    if keys.is_empty() {
        bail!(
            "the JWKS has no signing key for the allowed algorithms ({})",
            names(allowed)
        );
    }
    Ok(keys)
}

fn jwk_key(jwk: &Jwk, allowed: &[Algorithm]) -> anyhow::Result<Key> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        bail!("an encryption key");
    }
    let implied = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => bail!("an unsupported curve"),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => bail!("a symmetric key"),
        _ => bail!("an unsupported key type"),
    };
    let algorithm = match &jwk.common.key_algorithm {
        Some(named) => Algorithm::from_str(&named.to_string())
            .ok()
            .with_context(|| format!("an unsupported algorithm {named}"))?,
        None => implied,
    };
    if algorithm.family() != implied.family() {
        bail!("its alg does not fit its key type");
    }
    if !allowed.contains(&algorithm) {
        bail!("its algorithm {algorithm:?} is not allowed");
    }
    let key = DecodingKey::from_jwk(jwk).context("an unreadable key")?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algorithm,
        key,
    })
}

/// Algorithm names, comma-separated.
pub(crate) fn names(algorithms: &[Algorithm]) -> String {
    algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A JWKS at a URL: the keys last fetched, and when.
pub(crate) struct RemoteJwks {
    url: String,
    http: reqwest::Client,
    allowed: Vec<Algorithm>,
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the last fetch started; guards the refetches prompted by unknown key ids.
    fetched: tokio::sync::Mutex<Option<Instant>>,
    /// How often the keys are fetched anyway.
    refresh: Duration,
    /// Counts key-set replacements, so tokens verified with an older set are checked again.
    generation: AtomicU64,
}

impl RemoteJwks {
    /// Fetches the document once: a URL that does not answer with usable keys stops start-up.
    pub(crate) async fn load(
        url: String,
        allowed: Vec<Algorithm>,
        refresh: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        let remote = Self {
            url,
            http,
            allowed,
            keys: RwLock::new(Arc::new(Vec::new())),
            fetched: tokio::sync::Mutex::new(None),
            refresh,
            generation: AtomicU64::new(0),
        };
        let keys = remote.fetch().await?;
        remote.replace(keys);
        *remote.fetched.lock().await = Some(Instant::now());
        Ok(remote)
    }

    /// The keys last fetched.
    pub(crate) fn keys(&self) -> Arc<Vec<Key>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, keys: Vec<Key>) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Which key set is in use: it changes with every fetch that replaced the keys.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    async fn fetch(&self) -> anyhow::Result<Vec<Key>> {
        let mut response = self
            .http
            .get(&self.url)
            .send()
            .await
            .context("the JWKS URL does not answer")?
            .error_for_status()
            .context("the JWKS URL answers with an error")?;
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .context("the JWKS URL's answer broke off")?
        {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                bail!("the JWKS document is larger than {MAX_JWKS_BYTES} bytes");
            }
        }
        jwks_keys(&body, &self.allowed)
    }

    /// Fetches again because a token named an unknown key id, unless a fetch started less
    /// than [`MIN_REFETCH_GAP`] ago. Concurrent callers wait for the one fetch.
    pub(crate) async fn refetch_for_unknown_kid(&self) {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < MIN_REFETCH_GAP) {
            return;
        }
        *fetched = Some(Instant::now());
        self.refresh_now().await;
    }

    async fn refresh_now(&self) {
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "JWKS refreshed");
                self.replace(keys);
            }
            // The keys fetched before stay in use.
            Err(error) => tracing::warn!(
                error = format!("{error:#}"),
                "AUTH_JWKS_URL: refresh failed"
            ),
        }
    }

    /// Refreshes the keys every `refresh` until shutdown.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.refresh) => {}
                () = shutdown.cancelled() => return,
            }
            *self.fetched.lock().await = Some(Instant::now());
            self.refresh_now().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_and_encryption_keys_are_left_out_of_a_jwks() {
        let document = br#"{"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "OKP", "crv": "Ed25519", "use": "enc", "kid": "enc",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "sig",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
        ]}"#;
        let keys = jwks_keys(document, &[Algorithm::RS256, Algorithm::EdDSA]).unwrap();
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("sig")]);
        assert_eq!(keys[0].algorithm, Algorithm::EdDSA);
    }

    #[test]
    fn a_jwks_without_an_allowed_key_is_refused() {
        let document = br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": "sig",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        let error = jwks_keys(document, &[Algorithm::RS256]).err().unwrap();
        assert!(error.to_string().contains("RS256"), "{error}");
        assert!(jwks_keys(b"{}", &[Algorithm::RS256]).is_err());
    }

    #[test]
    fn a_key_whose_alg_contradicts_its_type_is_left_out() {
        let document = br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "RS256",
             "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}"#;
        assert!(jwks_keys(document, &[Algorithm::RS256, Algorithm::EdDSA]).is_err());
    }
}
