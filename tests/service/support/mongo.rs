//! MongoDB for the tests: a database of each test's own on the server at `MONGODB_URI` (which
//! `scripts/test.sh` starts), and private servers the outage tests stop and restart.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use scheduler::{
    config::{Config, StoreKind},
    store::mongo::MongoStore,
};

/// A database name no other test uses.
pub fn database_name() -> String {
    format!("test_{}", uuid::Uuid::new_v4().simple())
}

/// The settings of a MongoDB store on database `database` at `MONGODB_URI`.
pub fn mongo_config(database: &str) -> Config {
    let uri = std::env::var("MONGODB_URI").expect(
        "MONGODB_URI is not set: run the suite with ./scripts/test.sh, which starts a MongoDB-wire server",
    );
    let mut config = Config::for_tests();
    config.store = Some(StoreKind::Mongodb);
    config.mongodb_uri = Some(uri);
    config.database_name = database.to_owned();
    config.database_db_name_file = None;
    config
}

pub async fn mongo_store(database: &str) -> MongoStore {
    let settings = mongo_config(database).mongo_settings().await.unwrap();
    MongoStore::connect(settings).await.unwrap()
}

/// A MongoDB-wire server of this test's own, keeping its data in an H2 file so it survives a
/// restart.
pub struct PrivateMongo {
    child: Child,
    port: u16,
    file: std::path::PathBuf,
}

impl PrivateMongo {
    pub fn start(port: u16, file: &std::path::Path) -> Self {
        let classpath = std::env::var("MONGO_WIRE_SERVER_CLASSPATH")
            .expect("MONGO_WIRE_SERVER_CLASSPATH is not set: run the suite with ./scripts/test.sh");
        let mut child = Command::new("java")
            .args([
                "-Xmx256m",
                "-cp",
                &classpath,
                "MongoWireServer",
                "127.0.0.1",
            ])
            .arg(port.to_string())
            .arg(file)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("java starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("listening") => break,
                Some(_) => continue,
                None => panic!("the MongoDB-wire server exited before listening"),
            }
        }
        Self {
            child,
            port,
            file: file.to_owned(),
        }
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}", self.port)
    }

    /// Stops the server the way an operator would (SIGTERM), and waits for it.
    pub fn stop(mut self) -> (u16, std::path::PathBuf) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap();
        (self.port, self.file.clone())
    }
}

impl Drop for PrivateMongo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
