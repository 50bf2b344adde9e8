//! Certificates made in the test: a CA of its own for each server certificate, so a client
//! that trusts one CA tells which certificate a server presents.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A server certificate for `localhost` and `127.0.0.1`, its key, and the CA that signed it.
pub struct TestCert {
    /// The CA certificate, PEM, for clients to trust.
    pub ca_pem: String,
    /// The server certificate, PEM.
    pub cert_pem: String,
    /// The server certificate, DER, to compare with what a server presents.
    pub cert_der: Vec<u8>,
    /// The server certificate's private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl TestCert {
    /// A fresh CA named `name` and a server certificate signed by it.
    pub fn new(name: &str) -> Self {
        let mut ca = CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let mut server =
            CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, format!("{name} server"));
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &issuer).unwrap();
        Self {
            ca_pem,
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The CA as reqwest's root certificate.
    pub fn ca(&self) -> reqwest::Certificate {
        reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap()
    }

    /// Writes the certificate and the key as `cert.pem` and `key.pem` in `dir`; their paths.
    pub fn write_to(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}
