//! Prometheus scrapes for the tests: `GET /metrics` read into samples, and the real `promtool`
//! (at `PROMTOOL`, which `scripts/test.sh` builds once per machine) to check them.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::TestApp;

/// One sample line: its name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A scrape, as text and as samples.
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Scrapes `app`, expecting 200 and the text format's content type.
    pub async fn of(app: &TestApp) -> Self {
        let response = app.http.get(app.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        Self::parse(response.text().await.unwrap())
    }

    /// Reads the text exposition format (enough of it for what the service writes).
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let (name, labels) = match series.split_once('{') {
                    Some((name, rest)) => (name, labels_of(rest.trim_end_matches('}'))),
                    None => (series, BTreeMap::new()),
                };
                Sample {
                    name: name.to_owned(),
                    labels,
                    value: value.parse().unwrap_or(f64::NAN),
                }
            })
            .collect();
        Self { text, samples }
    }

    /// The sum of the samples named `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The samples named `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|l| l == v))
        })
    }

    /// Every sample name.
    pub fn names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }

    /// The families that have a `# HELP` line, with its text.
    pub fn help(&self) -> BTreeMap<&str, &str> {
        self.text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split_once(' '))
            .collect()
    }
}

/// `a="x",b="y"` as a map; label values the service writes hold no `",` sequences.
fn labels_of(text: &str) -> BTreeMap<String, String> {
    text.split("\",")
        .filter(|part| !part.is_empty())
        .filter_map(|part| part.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.trim_matches('"').to_owned()))
        .collect()
}

/// The promtool binary the suite needs.
pub fn promtool() -> PathBuf {
    let path = std::env::var("PROMTOOL").expect(
        "PROMTOOL is not set: run the suite with ./scripts/test.sh, which builds promtool (or PROMTOOL=$(./scripts/promtool.sh))",
    );
    assert!(Path::new(&path).is_file(), "PROMTOOL={path} is not a file");
    PathBuf::from(path)
}

/// Runs `promtool ARGS` with `stdin` and returns whether it passed, and what it printed.
pub fn run_promtool(args: &[&str], stdin: &str) -> (bool, String) {
    let mut child = Command::new(promtool())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), printed)
}
