//! A counting proxy between the service and its MongoDB-wire server: every request message
//! the service sends is one database round trip, counted by command name and, when the
//! command names one, collection (`find jobs`, `insert journal`, `hello`, ...), so a benchmark can say what the store asks of the server, not only what the
//! service asks of its store. The server's answers pass through untouched.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The wire protocol's `OP_MSG` and legacy `OP_QUERY` codes.
const OP_MSG: i32 = 2013;
const OP_QUERY: i32 = 2004;

/// Round trips counted so far, by command name.
pub type Counts = BTreeMap<String, u64>;

/// A proxy listening on a loopback port, forwarding to one server.
pub struct WireCounter {
    addr: SocketAddr,
    counts: Arc<Mutex<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl WireCounter {
    /// Starts a proxy to the server named by `uri`'s first host (`mongodb://host:port/...`).
    pub async fn start(uri: &str) -> Self {
        let rest = uri.strip_prefix("mongodb://").expect("a mongodb:// URI");
        let hosts = rest.split(['/', '?']).next().unwrap();
        let host = hosts.rsplit('@').next().unwrap().split(',').next().unwrap();
        let upstream = host.to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Mutex::new(Counts::new()));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let counts = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let answers = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    });
                    let _ = forward_counting(&mut from_client, &mut to_server, &counts).await;
                    answers.abort();
                });
            }
        });
        Self { addr, counts, task }
    }

    /// The URI that reaches the server through the proxy.
    pub fn uri(&self) -> String {
        format!("mongodb://{}/?directConnection=true", self.addr)
    }

    /// The round trips counted so far.
    pub fn counts(&self) -> Counts {
        self.counts.lock().unwrap().clone()
    }
}

impl Drop for WireCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies whole messages from the client to the server, counting each by its command name.
async fn forward_counting(
    from: &mut (impl AsyncReadExt + Unpin),
    to: &mut (impl AsyncWriteExt + Unpin),
    counts: &Mutex<Counts>,
) -> std::io::Result<()> {
    let mut message = Vec::new();
    loop {
        let mut length = [0_u8; 4];
        from.read_exact(&mut length).await?;
        let length = usize::try_from(i32::from_le_bytes(length).max(16)).unwrap();
        message.clear();
        message.extend_from_slice(&(length as i32).to_le_bytes());
        message.resize(length, 0);
        from.read_exact(&mut message[4..]).await?;
        *counts
            .lock()
            .unwrap()
            .entry(command_name(&message))
            .or_default() += 1;
        to.write_all(&message).await?;
    }
}

/// The command a request message carries: the first key of its command document.
fn command_name(message: &[u8]) -> String {
    let op_code = i32::from_le_bytes(message[12..16].try_into().unwrap());
    // OP_MSG: header, flag bits, then a body section (kind 0) holding the command document.
    // OP_QUERY: header, flags, a collection name, skip and limit, then the query.
    let document = match op_code {
        OP_MSG if message.get(20) == Some(&0) => 21,
        OP_QUERY => {
            let Some(end) = message[20..].iter().position(|b| *b == 0) else {
                return "unknown".into();
            };
            20 + end + 1 + 8
        }
        _ => return format!("op {op_code}"),
    };
    // A BSON document: its length, then an element: type, key (a C string), value.
    let key = document + 5;
    let Some(end) = message
        .get(key..)
        .and_then(|k| k.iter().position(|b| *b == 0))
    else {
        return "unknown".into();
    };
    let command = String::from_utf8_lossy(&message[key..key + end]);
    // A string value names the collection (`find: "jobs"`): counted apart, as `find jobs`.
    let value = key + end + 1;
    let collection = (message.get(document + 4) == Some(&2))
        .then(|| message.get(value..value + 4))
        .flatten()
        .and_then(|length| usize::try_from(i32::from_le_bytes(length.try_into().ok()?)).ok())
        .and_then(|length| message.get(value + 4..value + 4 + length.checked_sub(1)?));
    match collection {
        Some(name) => format!("{command} {}", String::from_utf8_lossy(name)),
        None => command.into_owned(),
    }
}

/// What was counted between two readings, per `per` (seconds, or calls): the total, and each
/// command's share.
pub fn round_trips_line(before: &Counts, after: &Counts, per: f64) -> String {
    let mut parts = Vec::new();
    let mut total = 0;
    for (command, count) in after {
        let made = count - before.get(command).copied().unwrap_or(0);
        if made > 0 {
            total += made;
            parts.push(format!("{command} {:.2}", made as f64 / per));
        }
    }
    format!("{:.2} ({})", total as f64 / per, parts.join(", "))
}
