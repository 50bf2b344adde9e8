//! Service discovery the go-kit way: with `ETCD_ENDPOINTS` set, the replica registers its
//! address in etcd under a lease it keeps alive, so go-kit's `sd/etcdv3` instancer (and
//! anything else that lists a key prefix) finds every live replica.
//!
//! The layout is the one go-kit's registrar writes: the key is the prefix followed by the
//! instance (`/services/scheduler/10.0.0.7:8080`), its value the instance string a client
//! dials (`10.0.0.7:8080`, REST and gRPC alike on the one port). A key per address, not per
//! process, so a replica restarted in place replaces its own entry rather than leaving a twin.
//!
//! Discovery is how others find the replica, not something the replica needs to do its work:
//! start-up never waits for etcd, readiness does not depend on it, and while etcd is away the
//! replica serves on unregistered and tries again with backoff. A lease that is lost (etcd
//! restarted without its data, the lease expired during an outage, someone revoked it) or a
//! key deleted from under it is registered again. At shutdown the lease is revoked, which
//! deletes the key at once; a replica killed outright disappears when its lease expires.

mod etcd;

use std::{net::SocketAddr, time::Duration};

use reqwest::Url;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::etcd::{Etcd, Lease};
use crate::runtime::Backoff;

/// Registration in etcd: where, under which key, for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscoverySettings {
    /// etcd endpoints, comma-separated URLs (`http://etcd-1:2379,http://etcd-2:2379`; a bare
    /// `host:port` means `http://`). With them the replica registers itself in etcd; without,
    /// it does not.
    #[arg(long, env = "ETCD_ENDPOINTS", value_parser = endpoints)]
    pub etcd_endpoints: Option<Endpoints>,
    /// The key prefix of the service's replicas; each registers `<prefix><address>`.
    #[arg(
        long,
        env = "SCHEDULER_ETCD_PREFIX",
        default_value = "/services/scheduler/",
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub etcd_prefix: String,
    /// Time to live of the registration's lease, in seconds (2 to 3600): how long a replica
    /// that died without deregistering stays listed. It is renewed every third of that.
    #[arg(long, env = "SCHEDULER_ETCD_TTL_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(2..=3600))]
    pub etcd_ttl_seconds: u64,
    /// The `host:port` other services reach this replica at, registered in etcd. By default
    /// the bound address; when that is every interface (`0.0.0.0`), the address of the
    /// interface that reaches etcd, with the bound port.
    #[arg(long, env = "SCHEDULER_ADVERTISE_ADDRESS", value_parser = advertised)]
    pub advertise_address: Option<String>,
}

/// etcd endpoint URLs, as parsed from `--etcd-endpoints`; empty means discovery is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints(Vec<Url>);

fn endpoints(text: &str) -> Result<Endpoints, String> {
    let mut urls = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let with_scheme = if part.contains("://") {
            part.to_owned()
        } else {
            format!("http://{part}")
        };
        let url = Url::parse(&with_scheme).map_err(|e| format!("`{part}` is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("`{part}` is not an http or https URL with a host"));
        }
        urls.push(url);
    }
    Ok(Endpoints(urls))
}

fn advertised(text: &str) -> Result<String, String> {
    let valid = text
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if !valid || text.contains('/') {
        return Err(format!("`{text}` is not host:port"));
    }
    Ok(text.to_owned())
}

impl DiscoverySettings {
    /// The registration of the replica bound to `bound`, when etcd endpoints are configured.
    pub fn registrar(&self, bound: SocketAddr) -> anyhow::Result<Option<Registrar>> {
        let Some(Endpoints(urls)) = &self.etcd_endpoints else {
            return Ok(None);
        };
        let Some(first) = urls.first().cloned() else {
            return Ok(None);
        };
        let ttl = Duration::from_secs(self.etcd_ttl_seconds);
        let heartbeat = heartbeat(ttl);
        Ok(Some(Registrar {
            etcd: Etcd::new(urls.clone(), heartbeat)?,
            first,
            prefix: self.etcd_prefix.clone(),
            ttl,
            advertised: self.advertise_address.clone(),
            bound,
        }))
    }
}

/// How long shutdown lets a registration under way finish, so the key it may already have put
/// is taken out again rather than left until its lease lapses.
const LAST_ATTEMPT: Duration = Duration::from_secs(1);

/// How often a lease of `ttl` is renewed: three chances before it lapses, as go-kit does.
fn heartbeat(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(500))
}

/// Keeps one replica registered in etcd until shutdown.
#[derive(Debug)]
pub struct Registrar {
    etcd: Etcd,
    /// The first endpoint, to find the interface etcd is reached through.
    first: Url,
    prefix: String,
    /// The lease's time to live asked for.
    ttl: Duration,
    /// The address to register, when configured.
    advertised: Option<String>,
    /// The address the port is bound to.
    bound: SocketAddr,
}

/// A registration in force.
#[derive(Debug)]
struct Registered {
    key: String,
    address: String,
    lease: Lease,
}

/// Why keeping a registration alive ended.
enum Kept {
    /// Shutdown started.
    Stopping,
    /// The lease or the key is gone for good: register anew.
    Lost,
}

impl Registrar {
    /// Registers and keeps the registration alive until `shutdown`, then revokes it. Never
    /// fails: an unreachable etcd is logged and retried, and the service serves meanwhile.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
        let mut failing = false;
        loop {
            // Shutdown waits at most `LAST_ATTEMPT` for an etcd that does not answer: an
            // attempt under way may already have put the key, so it may finish and the key
            // is taken out again; a lease granted by an attempt cut short lapses by itself.
            let register = self.register();
            tokio::pin!(register);
            let attempt = tokio::select! {
                attempt = &mut register => attempt,
                () = shutdown.cancelled() => {
                    if let Ok(Ok(registered)) = tokio::time::timeout(LAST_ATTEMPT, register).await {
                        self.deregister(&registered).await;
                    }
                    return Ok(());
                }
            };
            match attempt {
                Ok(registered) => {
                    failing = false;
                    backoff.reset();
                    tracing::info!(
                        key = %registered.key,
                        address = %registered.address,
                        lease = registered.lease.id,
                        ttl_seconds = registered.lease.ttl,
                        "registered in etcd"
                    );
                    match self.keep(&registered, &shutdown).await {
                        Kept::Stopping => {
                            self.deregister(&registered).await;
                            return Ok(());
                        }
                        Kept::Lost => continue,
                    }
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(
                            error = %format!("{error:#}"),
                            "cannot register in etcd; serving unregistered and retrying"
                        );
                        failing = true;
                    }
                    tokio::select! {
                        () = tokio::time::sleep(backoff.next_delay()) => {}
                        () = shutdown.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }

    /// Grants a lease and puts the key on it.
    async fn register(&self) -> anyhow::Result<Registered> {
        let address = self.address().await?;
        let key = format!("{}{address}", self.prefix);
        let lease = self.etcd.grant(self.ttl.as_secs()).await?;
        if let Err(error) = self.etcd.put(&key, &address, lease.id).await {
            // Best effort: the lease lapses by itself otherwise.
            let _ = self.etcd.revoke(lease.id).await;
            return Err(error.into());
        }
        Ok(Registered {
            key,
            address,
            lease,
        })
    }

    /// Renews the lease every heartbeat and puts the key back if it was deleted, until
    /// shutdown or until the lease is gone.
    async fn keep(&self, registered: &Registered, shutdown: &CancellationToken) -> Kept {
        let Registered {
            key,
            address,
            lease,
        } = registered;
        // etcd may have granted more than was asked (it rounds very short leases up).
        let ttl = self
            .ttl
            .max(Duration::from_secs(lease.ttl.try_into().unwrap_or(0)));
        let mut renewed = Instant::now();
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(heartbeat(ttl)) => {}
                () = shutdown.cancelled() => return Kept::Stopping,
            }
            match self.etcd.keep_alive(lease.id).await {
                Ok(Some(_)) => {
                    renewed = Instant::now();
                    if failing {
                        tracing::info!(%key, "etcd answers again; the lease is kept");
                        failing = false;
                    }
                }
                Ok(None) => {
                    tracing::warn!(%key, lease = lease.id, "the etcd lease is gone; registering again");
                    return Kept::Lost;
                }
                Err(error) if renewed.elapsed() >= ttl => {
                    tracing::warn!(
                        %key, %error,
                        "the etcd lease was not renewed for its whole time to live; registering again"
                    );
                    return Kept::Lost;
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!(%key, %error, "cannot renew the etcd lease; retrying");
                        failing = true;
                    }
                    continue;
                }
            }
            // The lease lives, but the key may have been deleted or overwritten meanwhile.
            match self.etcd.get(key).await {
                Ok(Some(entry)) if entry.lease == lease.id && &entry.value == address => {}
                Ok(_) => {
                    tracing::warn!(%key, "the etcd key was deleted or changed; putting it back");
                    if let Err(error) = self.etcd.put(key, address, lease.id).await {
                        tracing::warn!(%key, %error, "cannot put the etcd key back; retrying");
                    }
                }
                // The next heartbeat looks again.
                Err(_) => {}
            }
        }
    }

    /// Revokes the lease, deleting the key at once; bounded, so an unreachable etcd cannot hold
    /// up the exit (the key then goes when the lease expires).
    async fn deregister(&self, registered: &Registered) {
        let key = &registered.key;
        match tokio::time::timeout(
            Duration::from_secs(2),
            self.etcd.revoke(registered.lease.id),
        )
        .await
        {
            Ok(Ok(())) => tracing::info!(%key, "deregistered from etcd"),
            Ok(Err(error)) => tracing::warn!(
                %key, %error,
                "cannot deregister from etcd; the key goes when its lease expires"
            ),
            Err(_) => tracing::warn!(
                %key,
                "etcd did not answer the deregistration in time; the key goes when its lease expires"
            ),
        }
    }

    /// The address to register: as configured, else the bound one, else (bound to every
    /// interface) the address of the interface that reaches etcd, with the bound port.
    async fn address(&self) -> anyhow::Result<String> {
        if let Some(address) = &self.advertised {
            return Ok(address.clone());
        }
        if !self.bound.ip().is_unspecified() {
            return Ok(self.bound.to_string());
        }
        let ip = self.interface_towards_etcd().await.map_err(|error| {
            anyhow::anyhow!(
                "cannot find the interface that reaches etcd ({error}); set --advertise-address"
            )
        })?;
        Ok(SocketAddr::new(ip, self.bound.port()).to_string())
    }

    /// The local address of a UDP socket connected to the first endpoint: connecting sends
    /// nothing, it only picks the route.
    async fn interface_towards_etcd(&self) -> std::io::Result<std::net::IpAddr> {
        let host = self.first.host_str().unwrap_or_default();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self.first.port_or_known_default().unwrap_or(2379);
        let target = tokio::net::lookup_host((host, port))
            .await?
            .next()
            .ok_or_else(|| std::io::Error::other(format!("{host} resolves to no address")))?;
        let any: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = tokio::net::UdpSocket::bind(any).await?;
        socket.connect(target).await?;
        Ok(socket.local_addr()?.ip())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_urls_a_bare_host_port_is_http_and_empty_is_off() {
        let Endpoints(urls) = endpoints("http://etcd-1:2379, etcd-2:2379,https://e3").unwrap();
        let urls: Vec<String> = urls.iter().map(Url::to_string).collect();
        assert_eq!(
            urls,
            ["http://etcd-1:2379/", "http://etcd-2:2379/", "https://e3/"]
        );
        assert_eq!(endpoints(" ").unwrap(), Endpoints(Vec::new()));
        for bad in ["ftp://etcd:21", "http://", "http://a b:1"] {
            assert!(endpoints(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn an_advertised_address_is_host_and_port() {
        for good in ["10.0.0.7:8080", "scheduler-0.scheduler:8080", "[::1]:8080"] {
            assert_eq!(advertised(good).as_deref(), Ok(good));
        }
        for bad in [
            "10.0.0.7",
            ":8080",
            "host:0",
            "host:http",
            "http://host:8080",
        ] {
            assert!(advertised(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_lease_is_renewed_three_times_per_time_to_live_but_not_more_than_twice_a_second() {
        assert_eq!(heartbeat(Duration::from_secs(10)).as_millis(), 3333);
        assert_eq!(
            heartbeat(Duration::from_secs(1)),
            Duration::from_millis(500)
        );
    }

    #[tokio::test]
    async fn without_endpoints_nothing_registers_and_a_wildcard_bind_advertises_a_real_interface() {
        use clap::Parser;
        #[derive(Parser)]
        struct Flags {
            #[command(flatten)]
            discovery: DiscoverySettings,
        }
        let parse = |args: &[&str]| {
            let mut flags = Flags::parse_from([&["test"], args].concat()).discovery;
            if !args.contains(&"--etcd-endpoints") {
                flags.etcd_endpoints = None;
            }
            flags
        };
        let bound: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(parse(&[]).registrar(bound).unwrap().is_none());
        assert!(
            parse(&["--etcd-endpoints", ""])
                .registrar(bound)
                .unwrap()
                .is_none()
        );
        let registrar = parse(&["--etcd-endpoints", "http://127.0.0.1:2379"])
            .registrar(bound)
            .unwrap()
            .expect("a registrar");
        assert_eq!(registrar.address().await.unwrap(), "127.0.0.1:8080");
        let registrar = parse(&[
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
            "--advertise-address",
            "scheduler-0:9000",
        ])
        .registrar(bound)
        .unwrap()
        .unwrap();
        assert_eq!(registrar.address().await.unwrap(), "scheduler-0:9000");
    }
}
