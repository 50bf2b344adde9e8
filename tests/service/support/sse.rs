//! A Server-Sent Events client of `GET /api/v1/events`: each message's id, type and data.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

/// One message of the stream.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its `id:` (a place in the journal); none on `lagged`.
    pub id: Option<u64>,
    /// Its `event:`.
    pub event: String,
    /// Its `data:`, parsed.
    pub data: Value,
}

/// An open event stream.
pub struct EventClient {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl EventClient {
    /// Opens `url` (the events endpoint with its query), resuming after `last_event_id` when
    /// given; the answer must be 200.
    pub async fn open(url: &str, last_event_id: Option<u64>) -> Self {
        let mut request = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = request.send().await.expect("the stream opens");
        assert_eq!(response.status(), 200, "{url}");
        Self {
            body: response
                .bytes_stream()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped), or `None` when the stream ended or
    /// nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Message> {
        tokio::time::timeout(wait, self.next()).await.ok().flatten()
    }

    /// The next message, or `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if let Some(message) = parse(&block) {
                    return Some(message);
                }
                continue;
            }
            let chunk = self.body.next().await?.ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next `count` messages, each within 20 s.
    pub async fn take(&mut self, count: usize) -> Vec<Message> {
        let mut messages = Vec::with_capacity(count);
        while messages.len() < count {
            let message = self
                .next_within(Duration::from_secs(20))
                .await
                .unwrap_or_else(|| panic!("only {} of {count} messages came", messages.len()));
            messages.push(message);
        }
        messages
    }
}

/// A message from its block of lines; `None` for a comment-only block (a keep-alive).
fn parse(block: &str) -> Option<Message> {
    let (mut id, mut event, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("event:") {
            event = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    Some(Message {
        id,
        event: event?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
    })
}
