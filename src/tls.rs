//! TLS on the service's one port, when `--tls-cert-file` and `--tls-key-file` are set: loading
//! the PEM files, the certificate served to each new connection (swapped when the files are
//! rotated, so no restart is needed), and the handshake ([`Handshake`]) the accept loop in
//! `crate::serve` completes on each connection before serving HTTP/1.1 or HTTP/2, chosen by
//! ALPN.
//!
//! **Not here:** anything about requests or connections once TLS is up: `crate::serve` serves
//! them with the same router and limits as the plain port; which of the two a port speaks is
//! decided in `app`.

use std::{
    fmt,
    future::Future,
    path::{Path, PathBuf},
    sync::{Arc, PoisonError, RwLock},
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_util::sync::CancellationToken;

/// How the certificate setting is named in errors: the flag and its environment variable.
const CERT_SETTING: &str = "--tls-cert-file (SCHEDULER_TLS_CERT_FILE)";
/// How the key setting is named in errors.
const KEY_SETTING: &str = "--tls-key-file (SCHEDULER_TLS_KEY_FILE)";

/// How often the files are checked for a change. Polling two small files' metadata is cheap
/// and works on every filesystem, mounted secrets (a Kubernetes volume swaps a symlink)
/// included, where inotify needs care per platform and per way of replacing a file.
const POLL: Duration = Duration::from_secs(2);

/// Longest a client may take to complete its handshake: a connection that never does must not
/// hold a task, nor hold up a graceful shutdown, for ever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The two PEM files TLS is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, the server's own certificate first.
    pub cert: PathBuf,
    /// The private key of the first certificate (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and parses both files into a key ready to serve; errors name the setting at fault.
    fn load(&self, provider: &CryptoProvider) -> anyhow::Result<CertifiedKey> {
        let cert_pem = std::fs::read(&self.cert)
            .with_context(|| format!("{CERT_SETTING}: cannot read {}", self.cert.display()))?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("{CERT_SETTING}: {} is not valid PEM", self.cert.display()))?;
        if chain.is_empty() {
            bail!(
                "{CERT_SETTING}: {} holds no PEM CERTIFICATE",
                self.cert.display()
            );
        }
        let key_pem = std::fs::read(&self.key)
            .with_context(|| format!("{KEY_SETTING}: cannot read {}", self.key.display()))?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).with_context(|| {
            format!(
                "{KEY_SETTING}: {} holds no PEM private key",
                self.key.display()
            )
        })?;
        CertifiedKey::from_der(chain, key, provider).with_context(|| {
            format!(
                "{KEY_SETTING}: the key in {} is unusable or is not the key of the certificate \
                 in {}",
                self.key.display(),
                self.cert.display()
            )
        })
    }

    /// What the poll compares: each file's modification time and length, `None` for a file
    /// that cannot be read right now (it is being replaced, say).
    fn stamp(&self) -> Stamp {
        let of = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .map(|meta| (meta.modified().ok(), meta.len()))
        };
        [of(&self.cert), of(&self.key)]
    }
}

/// Each file's modification time and length, when it can be read.
type Stamp = [Option<(Option<SystemTime>, u64)>; 2];

/// The certificate every new handshake gets: the last one loaded successfully.
pub struct ReloadingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadingCert {
    fn new(key: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(key)),
        }
    }

    fn replace(&self, key: CertifiedKey) {
        // A panic while the lock was held cannot leave a half-written `Arc` behind.
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
    }

    fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert").finish_non_exhaustive()
    }
}

/// TLS for the port, loaded and ready: what [`Handshake`]s are made from and `watch_files`
/// reloads.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    cert: Arc<ReloadingCert>,
    acceptor: TlsAcceptor,
    /// The files' stamp read before they were loaded, so a change made between start-up and
    /// the first poll is not missed.
    loaded: Stamp,
}

impl Tls {
    /// Loads the files and builds the server configuration: ring for the cryptography, the
    /// default protocol versions (TLS 1.2 and 1.3), ALPN `h2` then `http/1.1`.
    pub fn load(files: TlsFiles) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let loaded = files.stamp();
        let cert = Arc::new(ReloadingCert::new(files.load(&provider)?));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no default protocol version")?
            .with_no_client_auth()
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            files,
            provider,
            cert,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            loaded,
        })
    }

    /// Reloads the files on SIGHUP and whenever either one's modification time or length
    /// changes, until `shutdown`. A file that does not load keeps the previous certificate in
    /// service and is logged once per change (or per SIGHUP).
    pub fn watch_files(
        &self,
        shutdown: CancellationToken,
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'static {
        let files = self.files.clone();
        let provider = self.provider.clone();
        let cert = self.cert.clone();
        let mut seen = self.loaded;
        async move {
            let mut hangups = Hangups::listen();
            let mut poll = tokio::time::interval(POLL);
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let why = tokio::select! {
                    () = shutdown.cancelled() => return Ok(()),
                    () = hangups.next() => "SIGHUP",
                    _ = poll.tick() => {
                        if files.stamp() == seen {
                            continue;
                        }
                        "the files changed"
                    }
                };
                // Stamped before reading: a write that lands during the read is seen next time.
                seen = files.stamp();
                // A few kilobytes, rarely: not worth a blocking thread.
                match files.load(&provider) {
                    Ok(key) => {
                        cert.replace(key);
                        tracing::info!(reason = why, "TLS certificate reloaded");
                    }
                    Err(error) => tracing::error!(
                        reason = why,
                        error = format!("{error:#}"),
                        "TLS certificate not reloaded; still serving the previous one"
                    ),
                }
            }
        }
    }

    /// What the accept loop completes each new connection's handshake with.
    pub fn handshake(&self) -> Handshake {
        Handshake {
            acceptor: self.acceptor.clone(),
        }
    }
}

/// The server side of a TLS handshake, with the current certificate and ALPN; cheap to clone
/// into each connection's task.
#[derive(Clone)]
pub struct Handshake {
    acceptor: TlsAcceptor,
}

impl Handshake {
    /// Completes the handshake on `tcp`, within [`HANDSHAKE_TIMEOUT`]; a failure ends only
    /// this connection.
    pub async fn complete(&self, tcp: TcpStream) -> anyhow::Result<TlsStream<TcpStream>> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp))
            .await
            .context("the TLS handshake timed out")?
            .context("the TLS handshake failed")
    }
}

/// SIGHUP, where there is such a thing; never, where listening for it failed.
struct Hangups {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangups {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|error| {
                    tracing::warn!(%error, "cannot listen for SIGHUP; the files are still polled");
                })
                .ok();
            Self { signal }
        }
        #[cfg(not(unix))]
        Self {}
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending().await
    }
}
