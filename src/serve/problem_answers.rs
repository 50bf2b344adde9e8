//! The problem document for the errors hyper answers itself.
//!
//! hyper refuses some malformed HTTP/1.1 requests before any handler sees them: a duplicate or
//! unreadable `Content-Length`, a request target over 64 KiB, a head with more than 100 headers
//! or larger than its read buffer. Its answer is a bare status (`content-length: 0`,
//! `connection: close`) with no hook to change it. [`ProblemAnswers`] wraps a connection's
//! stream and rewrites exactly that answer, as hyper writes it, into the
//! `application/problem+json` document every other error gets. Nothing else is touched: the
//! handlers' own errors always carry a body, and HTTP/2 frames never begin with a status line.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::http::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::rest::problem::{PROBLEM_JSON, Problem};

/// A connection's stream whose bare hyper error answers go out as problem documents.
pub(super) struct ProblemAnswers<I> {
    inner: I,
    /// A rewritten answer, and how much of it is written.
    rewritten: Option<(Vec<u8>, usize)>,
}

impl<I> ProblemAnswers<I> {
    pub(super) fn new(inner: I) -> Self {
        Self {
            inner,
            rewritten: None,
        }
    }
}

impl<I: AsyncWrite + Unpin> ProblemAnswers<I> {
    /// Writes what is left of a rewritten answer.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, written)) = &mut self.rewritten {
            if *written == answer.len() {
                self.rewritten = None;
                break;
            }
            let wrote = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*written..]))?;
            if wrote == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += wrote;
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ProblemAnswers<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ProblemAnswers<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.drain(cx))?;
        let Some(answer) = rewrite(buf) else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        // hyper's answer counts as written once its replacement is queued; the flush and the
        // shutdown hyper makes next write what is left of it.
        this.rewritten = Some((answer, 0));
        if let Poll::Ready(Err(e)) = this.drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.drain(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The problem-document answer for `written`, if it is one of hyper's own bare error answers:
/// a whole HTTP/1.1 head, status 400, 414 or 431, `content-length: 0`, `connection: close`.
fn rewrite(written: &[u8]) -> Option<Vec<u8>> {
    if !written.starts_with(b"HTTP/1.1 4") || !written.ends_with(b"\r\n\r\n") {
        return None;
    }
    let head = std::str::from_utf8(&written[..written.len() - 4]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<&str> = lines.collect();
    let status = status_line.get(9..12)?.parse::<u16>().ok()?;
    let detail = match status {
        400 => {
            "the request is not well-formed HTTP/1.1 (for example a duplicate or unreadable \
             Content-Length)"
        }
        414 => "the request target is longer than the server reads (64 KiB)",
        431 => "the request's header section has more than 100 fields or is too large",
        _ => return None,
    };
    let is = |wanted: &str| headers.iter().any(|h| h.eq_ignore_ascii_case(wanted));
    if !is("content-length: 0") || !is("connection: close") {
        return None;
    }
    let body =
        serde_json::to_vec(&Problem::new(StatusCode::from_u16(status).ok()?, detail)).ok()?;
    let mut answer = format!("{status_line}\r\n");
    for header in headers
        .iter()
        .filter(|h| !h.eq_ignore_ascii_case("content-length: 0"))
    {
        answer.push_str(header);
        answer.push_str("\r\n");
    }
    answer.push_str(&format!(
        "content-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    ));
    let mut answer = answer.into_bytes();
    answer.extend_from_slice(&body);
    Some(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_bare_answers_become_problems_and_nothing_else_changes() {
        let bare = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
                     content-length: 0\r\ndate: Thu, 03 Dec 2026 08:01:22 GMT\r\n\r\n";
        let answer = String::from_utf8(rewrite(bare).unwrap()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
        assert!(
            head.contains("\r\ndate: Thu, 03 Dec 2026 08:01:22 GMT\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ncontent-type: application/problem+json\r\n"));
        assert!(
            head.ends_with(&format!("content-length: {}", body.len())),
            "{head}"
        );
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 431);
        assert_eq!(problem["title"], "Request Header Fields Too Large");

        for untouched in [
            // A handler's own error: it has a body.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 2\r\n\r\n{}"[..],
            // Other statuses, and answers that keep the connection.
            b"HTTP/1.1 404 Not Found\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            // Not a status line: an HTTP/2 frame, a body.
            b"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
            b"HTTP/1.1 414 in the middle of a body",
        ] {
            assert!(rewrite(untouched).is_none(), "{:?}", String::from_utf8_lossy(untouched));
        }
    }
}
