//! Builds the service from its configuration and runs it until shutdown: the one place the
//! adapters are chosen.
//!
//! `Application::build` binds the port (0 picks a free one, so tests run the real service side
//! by side) and wires the store, the event bus, the use cases, the scheduler and both
//! transports, in plain text or over TLS (`tls`). `run` serves until the shutdown token is
//! cancelled, then stops accepting, lets in-flight requests finish, ends event streams and
//! stops claiming. A background task that dies (the scheduler, the outbox relay, the result
//! consumer, the certificate reloading) stops the service with an error, so the process exits
//! non-zero and its supervisor restarts it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;

use crate::{
    access::{Guard, guard, throttle},
    auth::Auth,
    config::{Config, StoreKind},
    discovery::Registrar,
    events::{BufferLimits, EventBus, EventStreams, Feed},
    grpc,
    jobs::{EventRoute, Jobs, hints::DueHints, ports::JobStore},
    kafka::{KafkaSettings, consumer::ResultConsumer, producer::KafkaPublisher},
    metrics::{BuildInfo, Metrics, requests::ObserveLayer, scrape::Recount},
    outbox::{Relay, RelaySettings, SinkSlot},
    rest::{self, AppState, RestSettings, Shared},
    runtime::{Backoff, Outage, Supervisor},
    scheduler::{Scheduler, SchedulerSettings},
    serve::{self, Port, ServeSettings},
    store::{
        metered::{Counting, MeteredStore},
        mongo::MongoStore,
        sqlite::SqliteStore,
    },
    throttle::RateLimit,
    tls::Tls,
    webhook::WebhookCaller,
};

/// The service, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    /// The address the listener is bound to.
    addr: SocketAddr,
    router: axum::Router,
    scheduler: Scheduler,
    /// Cancelled by `run` once serving has stopped, to end streams and the scheduler.
    internal_shutdown: CancellationToken,
    jobs: Jobs,
    /// The store, as the service uses it (metered when metrics are on).
    store: Arc<dyn JobStore>,
    /// What the SSE endpoint and the gRPC watch serve.
    streams: EventStreams,
    /// Journals (MongoDB), publishes (Kafka) and trims the stored events.
    relay: Relay,
    /// Hands journaled events to this process's event streams.
    feed: Feed,
    /// Calls jobs' webhooks, when some host may be called.
    webhooks: Option<WebhookCaller>,
    /// The Kafka side, when brokers are configured.
    kafka: Option<KafkaParts>,
    /// Access control, for its background refresh of a JWKS URL.
    auth: Auth,
    /// How long open requests may take after shutdown starts.
    grace: Duration,
    /// TLS for the port, when the certificate files are configured; plain HTTP otherwise.
    tls: Option<Tls>,
    /// The accept loop's limits.
    serve: ServeSettings,
    /// The request rate per client, when one is set, for its background sweep.
    rate: Option<Arc<RateLimit>>,
    /// The registration in etcd, when endpoints are configured.
    registrar: Option<Registrar>,
}

/// What runs beside the server when Kafka is configured.
struct KafkaParts {
    settings: KafkaSettings,
    publisher: KafkaPublisher,
    /// Where the relay finds the publisher, once the topics exist.
    slot: SinkSlot,
    /// For the result consumer's outcomes and lag.
    metrics: Metrics,
}

impl Application {
    /// Opens the store and binds the port.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let history = config.run_history as usize;
        let store: Arc<dyn JobStore> = match config.store_kind() {
            StoreKind::Embedded => {
                tracing::info!(data_dir = %config.data_dir.display(), "job store: embedded SQLite");
                Arc::new(SqliteStore::open(&config.data_dir)?.with_history(history))
            }
            StoreKind::Memory => {
                tracing::warn!("job store: in memory; every job is lost at exit");
                Arc::new(SqliteStore::in_memory()?.with_history(history))
            }
            StoreKind::Mongodb => {
                let settings = config.mongo_settings().await?;
                let hosts: Vec<String> = settings
                    .options
                    .hosts
                    .iter()
                    .map(|h| h.to_string())
                    .collect();
                tracing::info!(hosts = ?hosts, database = %settings.database, "job store: MongoDB");
                let poll = Duration::from_millis(config.outbox_poll_ms);
                let store = MongoStore::connect(settings).await?.with_history(history);
                Arc::new(store.with_relay_poll(poll))
            }
        };
        Self::with_store(config, store).await
    }

    /// As `build`, with a store made by the caller.
    pub async fn with_store(config: Config, store: Arc<dyn JobStore>) -> anyhow::Result<Self> {
        let metrics = metrics_of(&config);
        let store: Arc<dyn JobStore> = if metrics.is_on() {
            Arc::new(MeteredStore::new(store, metrics.clone()))
        } else {
            store
        };
        let recount = metrics.is_on().then(|| {
            Arc::new(Counting::new(
                store.clone(),
                Duration::from_millis(config.metrics_refresh_ms),
            )) as Arc<dyn Recount>
        });
        let serve = config.serve_settings()?;
        let streams = config.stream_limit();
        let rate = config.rate_limit().map(Arc::new);
        let auth = Auth::from_settings(&config.auth).await?;
        if auth.is_on() {
            tracing::info!("access control: every API call needs a token");
        } else {
            tracing::warn!(
                "no AUTH_PUBLIC_KEY_FILE, AUTH_JWKS_FILE or AUTH_JWKS_URL: the API is open to anyone who reaches the port"
            );
        }
        let tls = match config.tls_files()? {
            Some(files) => {
                let (cert, key) = (files.cert.clone(), files.key.clone());
                let tls = Tls::load(files)?;
                tracing::info!(
                    cert = %cert.display(),
                    key = %key.display(),
                    "TLS: on, h2 and http/1.1 by ALPN; reloaded on SIGHUP or when the files change"
                );
                Some(tls)
            }
            None => {
                tracing::info!("TLS: off; plain HTTP/1.1 and h2c");
                None
            }
        };
        let bus = EventBus::new(BufferLimits {
            events: config.stream_buffer_events,
            bytes: config.stream_buffer_bytes,
        });
        let hints = Arc::new(DueHints::new());
        let feed_wake = Arc::new(Notify::new());
        let relay_wake = Arc::new(Notify::new());
        let events = EventRoute::new(feed_wake.clone(), relay_wake.clone());
        let kafka = match config.kafka_settings() {
            None => {
                tracing::info!(
                    "no KAFKA_BROKERS: events go to the event streams only (SSE, gRPC watch)"
                );
                None
            }
            Some(settings) => {
                tracing::info!(brokers = %settings.brokers, "events: Kafka too, from the journal");
                let publisher = KafkaPublisher::new(&settings)?.with_metrics(metrics.clone());
                Some(KafkaParts {
                    settings,
                    publisher,
                    slot: SinkSlot::default(),
                    metrics: metrics.clone(),
                })
            }
        };
        let poll = Duration::from_millis(config.outbox_poll_ms);
        let relay = Relay::new(
            store.clone(),
            kafka.as_ref().map(|kafka| kafka.slot.clone()),
            relay_wake,
            feed_wake.clone(),
            RelaySettings {
                poll,
                lease: Duration::from_secs(config.lease_seconds.clamp(1, 10)),
                retention: config.retention(),
                sequences: config.store_kind() == StoreKind::Mongodb,
                ..RelaySettings::default()
            },
        );
        let feed = Feed::new(store.clone(), bus.clone(), feed_wake, poll);
        let streams_of_events = EventStreams::new(store.clone(), bus.clone());
        let kept_store = store.clone();
        let webhook_hosts = config.webhook_hosts()?;
        let mut jobs = Jobs::new(store.clone(), events.clone(), hints.clone())
            .with_limits(config.limits())
            .with_metrics(metrics.clone())
            .with_webhook_hosts(webhook_hosts.clone())
            .with_claim_wait_cap(Duration::from_secs(config.claim_max_wait_seconds));
        if let Some(kafka) = &kafka {
            jobs = jobs.with_sink(Arc::new(kafka.publisher.clone()));
        }
        // Webhooks are called only when some host may be.
        let webhooks = if webhook_hosts.is_empty() {
            None
        } else {
            tracing::info!(hosts = %config.webhook_allowed_hosts, "webhooks: on, to the allowed hosts only");
            Some(WebhookCaller::new(
                jobs.clone(),
                Duration::from_secs(config.webhook_timeout_seconds),
                webhook_hosts,
            )?)
        };
        let internal_shutdown = CancellationToken::new();
        let scheduler = Scheduler::new(
            store,
            events,
            hints,
            SchedulerSettings {
                batch_size: config.batch_size as usize,
                lease: Duration::from_secs(config.lease_seconds),
                idle_poll: Duration::from_millis(config.idle_poll_ms),
                lookahead: Duration::from_millis(config.lookahead_ms),
                limits: config.limits(),
                ..SchedulerSettings::default()
            },
        )
        .with_metrics(metrics.clone());
        let state = AppState::new(Shared {
            jobs: jobs.clone(),
            events: streams_of_events.clone(),
            shutdown: internal_shutdown.clone(),
            streams: streams.clone(),
            metrics: metrics.clone(),
            recount,
        });
        let rest_settings = RestSettings {
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout(),
        };
        let grpc = grpc::router(
            jobs.clone(),
            streams_of_events.clone(),
            internal_shutdown.clone(),
            streams,
            config.max_body_bytes,
            config.request_timeout(),
        )
        .await?;
        // The guard wraps both protocols, so every call, present and future, is decided by
        // the one policy before any handler runs; the rate, inside it, knows the caller.
        let router = rest::router(state, &rest_settings)
            .merge(crate::ui::router())
            .merge(grpc)
            .layer(axum::middleware::from_fn_with_state(rate.clone(), throttle))
            .layer(axum::middleware::from_fn_with_state(
                Guard::new(auth.clone()),
                guard,
            ));
        // Outside the guard, so refused calls are timed and traced too.
        let router = if metrics.is_on() || crate::telemetry::is_on() {
            router.layer(ObserveLayer::new(&metrics))
        } else {
            router
        };
        let address = SocketAddr::new(config.host, config.port);
        let listener = TcpListener::bind(address)
            .await
            .with_context(|| format!("Failed to listen on {address}"))?;
        let addr = listener
            .local_addr()
            .with_context(|| format!("Failed to read the address bound for {address}"))?;
        let registrar = config.discovery.registrar(addr)?;
        Ok(Self {
            listener,
            addr,
            router,
            scheduler,
            internal_shutdown,
            jobs,
            store: kept_store,
            streams: streams_of_events.clone(),
            relay,
            feed,
            webhooks,
            kafka,
            auth,
            grace: Duration::from_secs(config.shutdown_grace_seconds),
            tls,
            serve,
            rate,
            registrar,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The use cases, for embedding and benchmarks.
    pub fn jobs(&self) -> Jobs {
        self.jobs.clone()
    }

    /// The event streams: the journal, then live.
    pub fn events(&self) -> EventStreams {
        self.streams.clone()
    }

    /// The job store, as the service uses it.
    pub fn store(&self) -> Arc<dyn JobStore> {
        self.store.clone()
    }

    /// Serves until `shutdown` is cancelled, then shuts down gracefully. Ends with an error
    /// when a background task stopped early (it panicked, failed, or returned).
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let internal = self.internal_shutdown.clone();
        let mut tasks = Supervisor::new();
        let scheduler = self.scheduler;
        let stop = internal.clone();
        tasks.spawn("scheduler", async move {
            scheduler.run(stop).await;
            Ok(())
        });
        if let Some(refresh) = self.auth.refresher(internal.clone()) {
            tasks.spawn("jwks-refresh", async move {
                refresh.await;
                Ok(())
            });
        }
        let (relay, feed) = (self.relay, self.feed);
        let stop = internal.clone();
        tasks.spawn("relay", async move {
            relay.run(stop).await;
            Ok(())
        });
        let stop = internal.clone();
        tasks.spawn("event-feed", async move {
            feed.run(stop).await;
            Ok(())
        });
        if let Some(webhooks) = self.webhooks {
            let stop = internal.clone();
            tasks.spawn("webhooks", async move {
                webhooks.run(stop).await;
                Ok(())
            });
        }
        if let Some(kafka) = self.kafka {
            tasks.spawn(
                "kafka",
                run_kafka(kafka, self.jobs.clone(), internal.clone()),
            );
        }
        tracing::info!(address = %self.addr, tls = self.tls.is_some(), "serving REST and gRPC");
        // Open event streams never finish by themselves: end them when shutdown starts, so
        // graceful shutdown waits only for ordinary requests.
        let stop_serving = {
            let internal = internal.clone();
            async move {
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = internal.cancelled() => {}
                }
                internal.cancel();
            }
        };
        // Deregistered as soon as shutdown starts, so clients stop picking this replica.
        if let Some(registrar) = self.registrar {
            tasks.spawn("etcd-registration", registrar.run(internal.clone()));
        }
        if let Some(rate) = self.rate {
            let stop = internal.clone();
            tasks.spawn("rate-limit-sweep", async move {
                rate.sweep(stop).await;
                Ok(())
            });
        }
        let port = match self.tls {
            None => Port::Plain,
            Some(tls) => {
                tasks.spawn("tls-reload", tls.watch_files(internal.clone()));
                Port::Tls(tls.handshake())
            }
        };
        let server = serve::serve(self.listener, self.router, port, self.serve, stop_serving);
        tokio::pin!(server);
        // Once shutdown starts, open requests have `grace` to finish; then what is still open
        // (a client that stalled mid-request, a health watch) is closed as the process exits.
        let grace = self.grace;
        let grace_over = {
            let internal = internal.clone();
            async move {
                internal.cancelled().await;
                tokio::time::sleep(grace).await;
            }
        };
        tokio::pin!(grace_over);
        let mut failure = None;
        loop {
            tokio::select! {
                () = &mut server => break,
                () = &mut grace_over => {
                    tracing::warn!(
                        grace_seconds = grace.as_secs(),
                        "requests still open after the shutdown grace period; closing them"
                    );
                    break;
                }
                exit = tasks.next_exit() => {
                    if let Some(error) = exit.failure(internal.is_cancelled()) {
                        tracing::error!(error = ?error, "a background task stopped; the service stops");
                        failure.get_or_insert(error);
                        internal.cancel();
                    }
                }
            }
        }
        internal.cancel();
        let stopped = tasks.join_all().await;
        tracing::info!("stopped");
        if let Some(failure) = failure {
            return Err(failure);
        }
        stopped
    }
}

/// Creates the topics (retrying while the brokers are unreachable), then hands the relay its
/// publisher and runs the result consumer until shutdown. Until the topics exist, events wait
/// in the journal.
async fn run_kafka(
    kafka: KafkaParts,
    jobs: Jobs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut outage = Outage::new(
        "Kafka topics not ready; retrying",
        "Kafka topics ready",
        Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
    );
    loop {
        match crate::kafka::ensure_topics(&kafka.settings).await {
            Ok(()) => {
                outage.recovered();
                break;
            }
            Err(error) => {
                let wait = outage.failed(&error);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
        }
    }
    let consumer = ResultConsumer::new(
        &kafka.settings,
        jobs,
        kafka.publisher.producer().clone(),
        kafka.metrics,
    )
    .context("the result consumer cannot start")?;
    let _ = kafka.slot.set(Arc::new(kafka.publisher));
    consumer.run(shutdown).await;
    Ok(())
}

/// The metrics registry, or none when `--metrics false`.
fn metrics_of(config: &Config) -> Metrics {
    if !config.metrics {
        tracing::info!("metrics: off");
        return Metrics::off();
    }
    let store = match config.store_kind() {
        StoreKind::Embedded => "embedded",
        StoreKind::Memory => "memory",
        StoreKind::Mongodb => "mongodb",
    };
    Metrics::new(&BuildInfo {
        version: env!("CARGO_PKG_VERSION"),
        store,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
    tracing::info!("shutdown signal received");
}
