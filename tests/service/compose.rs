//! The compose file for local development (`docker-compose.yml`), checked without Docker: the
//! services it runs, that the scheduler is built from the Dockerfile with the contract's topic
//! names, that every secret it names is a file in the repository, and that every setting it
//! gives the scheduler is one the binary reads (its `--help` lists each as `[env: NAME=]`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use yaml_rust2::{Yaml, YamlLoader};

/// The topic settings and the names the contract gives them.
const CONTRACT_TOPICS: [(&str, &str); 5] = [
    ("TOPIC_JOB_CREATE", "topic-job-create"),
    ("TOPIC_JOB_UPDATE", "topic-job-update"),
    ("TOPIC_JOB_RUN", "topic-job-run"),
    ("TOPIC_JOB_RUN_RESULT", "topic-job-run-result"),
    ("TOPIC_JOB_RUN_RESULT_DLQ", "topic-job-run-result-dlq"),
];
const CONTRACT_CONSUMER_GROUP: (&str, &str) = (
    "TOPIC_JOB_RUN_RESULT_CONSUMER_GROUP_ID",
    "job-run-result-consumer-scheduler",
);

/// Settings the scheduler is given that are not its own flags: the log filter and the standard
/// OpenTelemetry variables are read by the telemetry set-up, not by clap.
const NOT_FLAGS: [&str; 3] = [
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

fn repository() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Yaml {
    let path = repository().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut documents = YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("docker-compose.yml is not YAML: {e}"));
    assert_eq!(documents.len(), 1, "docker-compose.yml holds one document");
    documents.remove(0)
}

fn service<'a>(compose: &'a Yaml, name: &str) -> &'a Yaml {
    let service = &compose["services"][name];
    assert!(
        matches!(service, Yaml::Hash(_)),
        "docker-compose.yml has no service {name}"
    );
    service
}

/// A scalar as compose reads it: numbers and booleans in `environment` are text too.
fn text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of scalars, or nothing when the key is absent.
fn list(value: &Yaml) -> Vec<&Yaml> {
    match value {
        Yaml::Array(items) => items.iter().collect(),
        Yaml::BadValue | Yaml::Null => Vec::new(),
        other => panic!("expected a list, found {other:?}"),
    }
}

/// A service's environment, in either of compose's forms: a map, or a list of `NAME=value`.
fn environment(service: &Yaml) -> BTreeMap<String, String> {
    match &service["environment"] {
        Yaml::Hash(map) => map
            .iter()
            .map(|(name, value)| {
                let name = text(name).expect("an environment variable's name is text");
                (name, text(value).unwrap_or_default())
            })
            .collect(),
        Yaml::Array(items) => items
            .iter()
            .map(|item| {
                let item = text(item).expect("an environment entry is text");
                match item.split_once('=') {
                    Some((name, value)) => (name.to_owned(), value.to_owned()),
                    None => (item, String::new()),
                }
            })
            .collect(),
        Yaml::BadValue | Yaml::Null => BTreeMap::new(),
        other => panic!("environment is neither a map nor a list: {other:?}"),
    }
}

fn environment_of(compose: &Yaml, name: &str) -> BTreeMap<String, String> {
    environment(service(compose, name))
}

/// The `(published, target)` port pairs of a service, from the short (`"8080:8080"`,
/// `"127.0.0.1:8080:8080/tcp"`) or the long (`target:`/`published:`) syntax.
fn published_ports(service: &Yaml) -> Vec<(String, String)> {
    list(&service["ports"])
        .into_iter()
        .filter_map(|port| match port {
            Yaml::Hash(_) => Some((text(&port["published"])?, text(&port["target"])?)),
            _ => {
                let port = text(port)?;
                let port = port.split('/').next().unwrap_or_default();
                let mut parts = port.rsplitn(3, ':');
                let target = parts.next()?.to_owned();
                let published = parts.next()?.to_owned();
                Some((published, target))
            }
        })
        .collect()
}

/// Where each secret a service lists is mounted (`/run/secrets/<target>`) and which it is.
fn mounted_secrets(service: &Yaml) -> BTreeMap<String, String> {
    list(&service["secrets"])
        .into_iter()
        .map(|secret| {
            let (source, target) = match secret {
                Yaml::Hash(_) => {
                    let source = text(&secret["source"]).expect("a secret's source");
                    let target = text(&secret["target"]).unwrap_or_else(|| source.clone());
                    (source, target)
                }
                _ => {
                    let source = text(secret).expect("a secret's name");
                    (source.clone(), source)
                }
            };
            let path = if target.starts_with('/') {
                target
            } else {
                format!("/run/secrets/{target}")
            };
            (path, source)
        })
        .collect()
}

fn services(compose: &Yaml) -> BTreeMap<String, &Yaml> {
    let Yaml::Hash(services) = &compose["services"] else {
        panic!("docker-compose.yml has no services")
    };
    services
        .iter()
        .map(|(name, service)| (text(name).expect("a service's name is text"), service))
        .collect()
}

/// The environment variables the binary reads, from the `[env: NAME=]` lines of its help.
fn variables_the_binary_reads() -> BTreeSet<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_scheduler"))
        .arg("--help")
        // No values from this process's environment in the help, and no settings either.
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "scheduler --help failed");
    let help = String::from_utf8(output.stdout).expect("the help is UTF-8");
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            let end = rest.find(['=', ']']).unwrap_or(rest.len());
            rest[..end].trim().to_owned()
        })
        .collect();
    assert!(
        names.contains("SERVER_PORT"),
        "the help lists no environment variables:\n{help}"
    );
    names
}

/// The names the unknown-variable checks should have found nothing in, with what they found.
fn unknown(names: impl IntoIterator<Item = String>, known: &BTreeSet<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| !NOT_FLAGS.contains(&name.as_str()) && !known.contains(name))
        .collect()
}

#[test]
fn compose_runs_the_scheduler_with_mongodb_kafka_their_consoles_prometheus_grafana_jaeger_and_etcd()
{
    let compose = compose();
    for name in [
        "mongo",
        "kafka",
        "kafka-ui",
        "mongo-express",
        "grpcui",
        "scheduler",
        "prometheus",
        "grafana",
        "jaeger",
        "etcd",
    ] {
        service(&compose, name);
    }
}

#[test]
fn compose_scheduler_sends_traces_to_jaeger_and_registers_in_etcd() {
    let compose = compose();
    let env = environment_of(&compose, "scheduler");
    assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://jaeger:4318");
    assert_eq!(env["ETCD_ENDPOINTS"], "http://etcd:2379");
    assert_eq!(
        env["SCHEDULER_ADVERTISE_ADDRESS"],
        format!("scheduler:{}", env["SERVER_PORT"])
    );
    let jaeger = published_ports(service(&compose, "jaeger"));
    assert!(
        jaeger.iter().any(|(_, inside)| inside == "16686"),
        "Jaeger's UI is published: {jaeger:?}"
    );
}

/// The host files a service bind-mounts (`./path:/in/container`), by container path.
fn bind_mounts(service: &Yaml) -> BTreeMap<String, std::path::PathBuf> {
    list(&service["volumes"])
        .into_iter()
        .filter_map(text)
        .filter_map(|mount| {
            let mut parts = mount.split(':');
            let host = parts.next()?.strip_prefix("./")?.to_owned();
            let container = parts.next()?.to_owned();
            Some((container, repository().join(host)))
        })
        .collect()
}

#[test]
fn compose_prometheus_scrapes_the_scheduler_with_the_alerts_and_grafana_shows_the_dashboard() {
    let compose = compose();
    let prometheus = bind_mounts(service(&compose, "prometheus"));
    let config = &prometheus["/etc/prometheus/prometheus.yml"];
    let config = &yaml_rust2::YamlLoader::load_from_str(&std::fs::read_to_string(config).unwrap())
        .unwrap()[0];
    let rules = text(&config["rule_files"][0]).expect("a rule file");
    assert!(
        prometheus.get(&rules).is_some_and(|file| file.is_file()),
        "the rule file {rules} is mounted from the repository"
    );
    let scrape = &config["scrape_configs"][0];
    assert_eq!(text(&scrape["metrics_path"]).as_deref(), Some("/metrics"));
    let port = environment_of(&compose, "scheduler")["SERVER_PORT"].clone();
    assert_eq!(
        text(&scrape["static_configs"][0]["targets"][0]),
        Some(format!("scheduler:{port}")),
        "Prometheus scrapes the scheduler's port"
    );

    let grafana = bind_mounts(service(&compose, "grafana"));
    let provisioning = &grafana["/etc/grafana/provisioning"];
    let datasource =
        std::fs::read_to_string(provisioning.join("datasources/prometheus.yml")).unwrap();
    assert!(datasource.contains("url: http://prometheus:9090"));
    let provider = std::fs::read_to_string(provisioning.join("dashboards/scheduler.yml")).unwrap();
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    assert!(
        grafana
            .get("/var/lib/grafana/dashboards/scheduler.json")
            .is_some_and(|file| file.ends_with("deploy/grafana/scheduler.json") && file.is_file()),
        "the dashboard is provisioned from the repository"
    );
}

#[test]
fn compose_builds_the_scheduler_from_the_dockerfile_and_publishes_8080() {
    let compose = compose();
    let scheduler = service(&compose, "scheduler");
    let (context, dockerfile) = match &scheduler["build"] {
        Yaml::Hash(_) => (
            text(&scheduler["build"]["context"]).unwrap_or_else(|| ".".into()),
            text(&scheduler["build"]["dockerfile"]).unwrap_or_else(|| "Dockerfile".into()),
        ),
        build => (
            text(build).expect("the scheduler is built, not only pulled"),
            "Dockerfile".into(),
        ),
    };
    assert_eq!(dockerfile, "Dockerfile");
    let path: PathBuf = repository().join(&context).join(&dockerfile);
    assert!(path.is_file(), "{} does not exist", path.display());

    let ports = published_ports(scheduler);
    assert!(
        ports.contains(&("8080".into(), "8080".into())),
        "the scheduler does not publish 8080:8080: {ports:?}"
    );
}

#[test]
fn compose_scheduler_uses_the_contract_topic_names() {
    let compose = compose();
    let environment = environment(service(&compose, "scheduler"));
    for (name, expected) in CONTRACT_TOPICS.into_iter().chain([CONTRACT_CONSUMER_GROUP]) {
        assert_eq!(
            environment.get(name).map(String::as_str),
            Some(expected),
            "{name} is not the contract's"
        );
    }
    for (topic, _) in CONTRACT_TOPICS {
        for setting in ["PARTITIONS", "REPLICAS"] {
            let name = format!("{topic}_{setting}");
            let value = environment
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is not set"));
            assert!(
                value.parse::<u32>().is_ok_and(|n| n >= 1),
                "{name} is not a positive count: {value:?}"
            );
        }
    }
}

#[test]
fn compose_scheduler_reaches_kafka_on_a_listener_it_advertises_to_containers() {
    let compose = compose();
    let environment = environment(service(&compose, "scheduler"));
    let brokers = environment
        .get("KAFKA_BROKERS")
        .filter(|b| !b.is_empty())
        .expect("the scheduler's KAFKA_BROKERS is set");
    let kafka = environment_of(&compose, "kafka");
    let advertised = kafka
        .get("KAFKA_ADVERTISED_LISTENERS")
        .expect("kafka advertises its listeners");
    for broker in brokers.split(',') {
        let (host, _port) = broker
            .trim()
            .rsplit_once(':')
            .unwrap_or_else(|| panic!("broker {broker:?} has no port"));
        assert_eq!(host, "kafka", "broker {broker:?} is not the kafka service");
        assert!(
            advertised
                .split(',')
                .any(|listener| listener.ends_with(&format!("://{}", broker.trim()))),
            "kafka does not advertise {broker}: {advertised}"
        );
    }
}

#[test]
fn compose_file_variables_name_mounted_secrets_whose_files_exist() {
    let compose = compose();
    for (name, service) in services(&compose) {
        let mounted = mounted_secrets(service);
        for (variable, path) in environment(service) {
            if !variable.ends_with("_FILE") {
                continue;
            }
            let secret = mounted.get(&path).unwrap_or_else(|| {
                panic!("{name}: {variable}={path} is not a secret mounted in the service")
            });
            assert_eq!(
                path,
                format!("/run/secrets/{secret}"),
                "{name}: {variable} does not point to /run/secrets/{secret}"
            );
            let declared = &compose["secrets"][secret.as_str()];
            let file = text(&declared["file"]).unwrap_or_else(|| {
                panic!("{name}: secret {secret} is not declared at top level with a file")
            });
            let file = repository().join(file);
            assert!(
                file.is_file(),
                "{name}: the file of secret {secret} ({}) does not exist",
                file.display()
            );
        }
    }
    assert!(
        environment_of(&compose, "scheduler")
            .keys()
            .any(|v| v.ends_with("_FILE")),
        "the scheduler reads no secret from a file"
    );
}

#[test]
fn compose_kafka_runs_in_kraft_mode_without_zookeeper() {
    let compose = compose();
    for (name, service) in services(&compose) {
        let image = text(&service["image"]).unwrap_or_default();
        assert!(
            !name.contains("zookeeper") && !image.contains("zookeeper"),
            "service {name} ({image}) is a ZooKeeper"
        );
    }
    let kafka = environment_of(&compose, "kafka");
    assert!(
        !kafka.keys().any(|name| name.contains("ZOOKEEPER")),
        "kafka is configured for ZooKeeper: {kafka:?}"
    );
    let roles = kafka
        .get("KAFKA_PROCESS_ROLES")
        .expect("kafka sets KAFKA_PROCESS_ROLES");
    assert!(
        roles.split(',').any(|role| role.trim() == "controller"),
        "kafka is not its own controller: {roles}"
    );
}

#[test]
fn compose_mongo_is_mongo_7() {
    let compose = compose();
    assert_eq!(
        text(&service(&compose, "mongo")["image"]).as_deref(),
        Some("mongo:7"),
        "the mongo service's image is not mongo:7"
    );
}

#[test]
fn compose_gives_the_scheduler_only_variables_the_binary_reads() {
    let compose = compose();
    let known = variables_the_binary_reads();
    let unknown = unknown(environment_of(&compose, "scheduler").into_keys(), &known);
    assert!(
        unknown.is_empty(),
        "the scheduler binary does not read {unknown:?} (it reads {known:?})"
    );
}

#[test]
fn dockerfile_sets_only_variables_the_binary_reads() {
    let dockerfile = std::fs::read_to_string(repository().join("Dockerfile"))
        .expect("the Dockerfile is readable");
    // Instructions, with their continuation lines joined and comments dropped.
    let joined = dockerfile
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let names: Vec<String> = joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .filter_map(|pair| pair.split_once('=').map(|(name, _)| name.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(!names.is_empty(), "the Dockerfile sets no ENV");
    let known = variables_the_binary_reads();
    let unknown = unknown(names, &known);
    assert!(
        unknown.is_empty(),
        "the scheduler binary does not read {unknown:?} (it reads {known:?})"
    );
}
