//! Tokens for the access-control tests, signed with the test keys in `tests/keys/`: good ones
//! of each role and algorithm, and each kind of bad one a hostile client might send.

use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};

/// The issuer and audience the access-control tests configure.
pub const ISSUER: &str = "https://id.example.com";
pub const AUDIENCE: &str = "scheduler";

/// A test key file's path.
pub fn key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn key_text(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).expect("a test key")
}

/// A signing key of the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// `rsa.key`: the key the service is configured with.
    Rsa,
    /// `other-rsa.key`: a key the service does not know (until a JWKS rotates to it).
    OtherRsa,
    /// `ec.key`, served in a JWKS as `ec-1`.
    Ec,
    /// `ed25519.key`, served in a JWKS as `ed-1`.
    Ed,
}

impl Signer {
    fn encoding_key(self) -> EncodingKey {
        match self {
            Self::Rsa => EncodingKey::from_rsa_pem(&key_text("rsa.key")),
            Self::OtherRsa => EncodingKey::from_rsa_pem(&key_text("other-rsa.key")),
            Self::Ec => EncodingKey::from_ec_pem(&key_text("ec.key")),
            Self::Ed => EncodingKey::from_ed_pem(&key_text("ed25519.key")),
        }
        .expect("a readable test key")
    }

    fn algorithm(self) -> Algorithm {
        match self {
            Self::Rsa | Self::OtherRsa => Algorithm::RS256,
            Self::Ec => Algorithm::ES256,
            Self::Ed => Algorithm::EdDSA,
        }
    }

    /// The public JWK of the key, with `kid`.
    pub fn jwk(self, kid: &str) -> Value {
        let jwk = Jwk::from_encoding_key(&self.encoding_key(), self.algorithm()).unwrap();
        let mut value = serde_json::to_value(jwk).unwrap();
        value["kid"] = json!(kid);
        value
    }

    /// A token of `claims`, with `kid` in its header when given.
    pub fn sign(self, claims: &Value, kid: Option<&str>) -> String {
        let mut header = Header::new(self.algorithm());
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }
}

/// A JWKS document of these keys.
pub fn jwks(keys: &[(Signer, &str)]) -> Value {
    json!({"keys": keys.iter().map(|(signer, kid)| signer.jwk(kid)).collect::<Vec<_>>()})
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Good claims for `sub` with a `role`, valid for five minutes, for the tests' issuer and
/// audience.
pub fn claims(sub: &str, role: &str) -> Value {
    json!({"sub": sub, "role": role, "iss": ISSUER, "aud": AUDIENCE,
           "iat": now(), "exp": now() + 300})
}

/// `claims` with some fields replaced (a null removes one).
pub fn claims_with(sub: &str, role: &str, changes: Value) -> Value {
    let mut claims = claims(sub, role);
    for (name, value) in changes.as_object().expect("an object of changes") {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// An RS256 token of the configured key for `sub` with `role`.
pub fn token(sub: &str, role: &str) -> String {
    Signer::Rsa.sign(&claims(sub, role), None)
}

/// Seconds from now, for `exp` and `nbf`.
pub fn in_seconds(seconds: i64) -> Value {
    json!(now() + seconds)
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An unsigned token (`alg: none`) claiming `role`.
pub fn unsigned(role: &str) -> String {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(claims("mallory", role).to_string().as_bytes());
    format!("{header}.{body}.")
}

/// A token "signed" with HMAC-SHA256 using the service's RSA public key as the secret: the
/// classic algorithm-confusion attack.
pub fn hmac_with_public_key(role: &str) -> String {
    let secret = EncodingKey::from_secret(&key_text("rsa.pub")).unwrap();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory", role),
        &secret,
    )
    .unwrap()
}
