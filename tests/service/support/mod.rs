//! What the tests share, one copy of each: the service in process ([`app`]) and as a child
//! process ([`process`]), certificates made for TLS ([`certs`]), MongoDB, Kafka, etcd and Jaeger servers and clients ([`mongo`], [`kafka`], [`etcd`], [`jaeger`]), request
//! bodies and values ([`bodies`]), Prometheus scrapes and promtool ([`scrape`]), an event-stream client ([`sse`]), waiting ([`wait`]), free ports ([`net`]), golden files
//! ([`golden`]) and table tests that report every failing row ([`table`]).

pub mod app;
pub mod bodies;
pub mod certs;
pub mod etcd;
pub mod golden;
pub mod jaeger;
pub mod kafka;
pub mod mongo;
pub mod net;
pub mod process;
pub mod scrape;
pub mod sse;
pub mod table;
pub mod tokens;
pub mod wait;

pub use self::{
    app::TestApp,
    bodies::{at, email_job, id_of, job_from, sms_job, timestamp},
    certs::TestCert,
    golden::matches_golden,
    mongo::{PrivateMongo, database_name, mongo_config, mongo_store},
    net::free_port,
    process::Service,
    sse::EventClient,
    table::Failures,
    wait::{eventually, in_millis},
};
