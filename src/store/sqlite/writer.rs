//! The embedded store's group commit and its read connections.
//!
//! One writer thread owns the write connection. The writes that arrive while it commits are
//! taken together: one `BEGIN IMMEDIATE`, each write in a savepoint of its own, one `COMMIT`,
//! so one fsync serves the whole batch. A write that fails (a version conflict, a taken key, a
//! panic) is rolled back to its savepoint and fails only its own caller; every caller is
//! answered after the commit, so nothing is acknowledged before it is on disk. If the commit
//! itself fails, every write of the batch fails.
//!
//! A write that arrives alone (the scheduler's claims and steps, mostly) needs no savepoint:
//! its transaction is its own, committed if it succeeded and rolled back if it failed. That
//! matters beyond the two statements saved: while a savepoint is open, SQLite's journal of the
//! pages each statement changed keeps growing until the savepoint ends, and past 64 KiB it is
//! written to a temporary file; without one it is emptied after every statement.
//!
//! Reads go to a small pool of connections of their own: in WAL mode a reader sees the last
//! commit and never waits for the writer. An in-memory database has a single connection,
//! which reads and writes share.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
        mpsc,
    },
};

use anyhow::anyhow;
use rusqlite::Connection;
use tokio::sync::oneshot;

use super::rows::map_err;
use crate::jobs::ports::StoreError;

/// Most writes committed in one transaction: enough for any burst of concurrent calls, few
/// enough that the first of them is not held long.
const MOST_PER_COMMIT: usize = 256;

/// A connection behind its lock; the lock is held for one call or one batch.
pub(super) type Shared = Arc<Mutex<Connection>>;

/// One caller's write, waiting in the queue.
trait Pending: Send {
    /// Runs the write inside the open transaction, in a savepoint of its own when other
    /// writes share the transaction (`shared`); whether it failed.
    fn run(&mut self, conn: &Connection, shared: bool) -> bool;
    /// Answers the caller once the batch is committed (or could not be).
    fn answer(self: Box<Self>, commit: Result<(), String>);
}

/// A write and where its answer goes.
struct Call<T, F> {
    write: Option<F>,
    outcome: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Pending for Call<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection, shared: bool) -> bool {
        let Some(write) = self.write.take() else {
            return false;
        };
        let run = || {
            catch_unwind(AssertUnwindSafe(|| write(conn)))
                .unwrap_or_else(|_| Err(StoreError::Internal(anyhow!("a store write panicked"))))
        };
        let outcome = if !shared {
            run()
        } else {
            match conn.execute_batch("SAVEPOINT call") {
                Ok(()) => {
                    let outcome = run();
                    let end = match outcome {
                        Ok(_) => conn.execute_batch("RELEASE call"),
                        Err(_) => conn.execute_batch("ROLLBACK TO call; RELEASE call"),
                    };
                    end.map_err(map_err).and(outcome)
                }
                Err(e) => Err(map_err(e)),
            }
        };
        let failed = outcome.is_err();
        self.outcome = Some(outcome);
        failed
    }

    fn answer(self: Box<Self>, commit: Result<(), String>) {
        let answer = match (commit, self.outcome) {
            (Ok(()), Some(outcome)) => outcome,
            (Ok(()), None) => Err(StoreError::Internal(anyhow!("a store write was not run"))),
            // The commit's own error went to the log once; each caller gets its text.
            (Err(why), _) => Err(StoreError::Unavailable(anyhow!(why))),
        };
        // A caller that went away no longer needs its answer.
        let _ = self.reply.send(answer);
    }
}

/// The queue to the writer thread, and the read connections.
pub(super) struct Connections {
    queue: mpsc::Sender<Box<dyn Pending>>,
    readers: Vec<Shared>,
    next_reader: AtomicUsize,
    /// Batches committed so far.
    #[cfg(test)]
    commits: Arc<AtomicU64>,
}

impl Connections {
    /// Starts the writer thread on `writer`; reads go to `readers` (none: to the writer's
    /// connection, as an in-memory database needs).
    pub(super) fn start(writer: Shared, readers: Vec<Shared>) -> std::io::Result<Self> {
        let (queue, waiting) = mpsc::channel();
        let readers = if readers.is_empty() {
            vec![writer.clone()]
        } else {
            readers
        };
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || commit_loop(&writer, &waiting, &counted))?;
        Ok(Self {
            queue,
            readers,
            next_reader: AtomicUsize::new(0),
            #[cfg(test)]
            commits,
        })
    }

    /// Runs `f` in the next group commit; answers once that commit is on disk.
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let call: Box<dyn Pending> = Box::new(Call {
            write: Some(f),
            outcome: None,
            reply,
        });
        self.queue
            .send(call)
            .map_err(|_| StoreError::Internal(anyhow!("the store's writer has stopped")))?;
        answer
            .await
            .map_err(|_| StoreError::Internal(anyhow!("the store's writer has stopped")))?
    }

    /// Runs `f` on the next read connection, on the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let turn = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.read_on(turn, f).await
    }

    /// Runs `f` on the first read connection, so that such reads take turns: a page of the
    /// listing holds up to its byte bound in memory, and pages read one at a time bound what
    /// concurrent listings hold together.
    pub(super) async fn read_in_turn<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.read_on(0, f).await
    }

    async fn read_on<T, F>(&self, reader: usize, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = self.readers[reader].clone();
        tokio::task::spawn_blocking(move || f(&mut lock(&conn)))
            .await
            .map_err(|e| StoreError::Internal(anyhow!(e)))?
    }

    /// The connection reads use first, for tests (query plans; in memory, holding it holds
    /// the writer).
    #[cfg(test)]
    pub(super) fn reader(&self) -> &Shared {
        &self.readers[0]
    }

    /// Batches committed so far, for tests.
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

/// A connection's lock, even after a panic while it was held: SQLite rolls back an unfinished
/// transaction, so the connection stays usable.
pub(super) fn lock(conn: &Shared) -> std::sync::MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: until every sender is gone, takes what is queued and commits it as one.
fn commit_loop(conn: &Shared, waiting: &mpsc::Receiver<Box<dyn Pending>>, commits: &AtomicU64) {
    while let Ok(first) = waiting.recv() {
        let mut batch = vec![first];
        while batch.len() < MOST_PER_COMMIT {
            match waiting.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let conn = lock(conn);
        let alone = batch.len() == 1;
        let mut rolled_back = false;
        let commit = match conn.execute_batch("BEGIN IMMEDIATE") {
            Ok(()) => {
                let failed = batch
                    .iter_mut()
                    .map(|call| call.run(&conn, !alone))
                    .filter(|&failed| failed)
                    .count();
                // A lone write that failed is undone with its transaction, the one thing in it.
                rolled_back = alone && failed == 1;
                let end = if rolled_back { "ROLLBACK" } else { "COMMIT" };
                conn.execute_batch(end).inspect_err(|_| {
                    // Leave no transaction open for the next batch.
                    let _ = conn.execute_batch("ROLLBACK");
                })
            }
            Err(e) => Err(e),
        };
        drop(conn);
        if commit.is_ok() && !rolled_back {
            commits.fetch_add(1, Ordering::Relaxed);
        }
        let commit = commit.map_err(|e| {
            tracing::error!(error = %e, writes = batch.len(), "the embedded store could not commit a batch of writes");
            format!("the embedded store could not commit: {e}")
        });
        for call in batch {
            call.answer(commit.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, pin::Pin};

    use futures::FutureExt;

    use super::*;

    type Answer = Pin<Box<dyn Future<Output = Result<(), StoreError>> + Send>>;

    /// A write that inserts `x` into the scratch table, then ends as `end` says.
    fn insert(conns: &Arc<Connections>, x: i64, end: &'static str) -> Answer {
        let conns = conns.clone();
        Box::pin(async move {
            conns
                .write(move |conn| {
                    conn.execute("INSERT INTO t (x) VALUES (?1)", [x])
                        .map_err(map_err)?;
                    match end {
                        "conflict" => Err(StoreError::VersionConflict),
                        "panic" => panic!("a write that panics"),
                        _ => Ok(()),
                    }
                })
                .await
        })
    }

    /// A writer over a fresh in-memory database built by `schema`.
    fn connections(schema: &str) -> (Shared, Arc<Connections>) {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(schema).unwrap();
        let shared = Arc::new(Mutex::new(conn));
        let conns = Arc::new(Connections::start(shared.clone(), Vec::new()).unwrap());
        (shared, conns)
    }

    /// What the scratch table holds, in order.
    async fn stored(conns: &Connections) -> Vec<i64> {
        conns
            .read(|conn| {
                let mut stmt = conn
                    .prepare("SELECT x FROM t ORDER BY x")
                    .map_err(map_err)?;
                let rows = stmt.query_map([], |row| row.get(0)).map_err(map_err)?;
                rows.collect::<Result<_, _>>().map_err(map_err)
            })
            .await
            .unwrap()
    }

    /// Queues `(x, end)` inserts while the writer runs a write that waits for them, so that
    /// they all go in the next batch; checks none is answered before its commit, then returns
    /// each one's outcome.
    async fn queued_in_one_batch(
        conns: &Arc<Connections>,
        writes: &[(i64, &'static str)],
    ) -> Vec<Result<(), StoreError>> {
        let (running, started) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let blocker = {
            let conns = conns.clone();
            tokio::spawn(async move {
                conns
                    .write(move |_| {
                        running.send(()).unwrap();
                        released.recv().unwrap();
                        Ok(())
                    })
                    .await
            })
        };
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        let mut answers: Vec<Answer> = writes
            .iter()
            .map(|&(x, end)| insert(conns, x, end))
            .collect();
        for answer in &mut answers {
            assert!(
                answer.as_mut().now_or_never().is_none(),
                "answered before its commit"
            );
        }
        release.send(()).unwrap();
        blocker.await.unwrap().unwrap();
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(answer.await);
        }
        outcomes
    }

    #[tokio::test]
    async fn writes_queued_together_commit_as_one_and_a_failed_one_fails_alone() {
        let (_shared, conns) = connections("CREATE TABLE t (x INTEGER NOT NULL)");
        let writes = [
            (1, "ok"),
            (2, "conflict"),
            (3, "panic"),
            (4, "ok"),
            (5, "ok"),
        ];
        let outcomes = queued_in_one_batch(&conns, &writes).await;
        assert!(outcomes[0].is_ok() && outcomes[3].is_ok() && outcomes[4].is_ok());
        assert!(matches!(outcomes[1], Err(StoreError::VersionConflict)));
        assert!(
            matches!(&outcomes[2], Err(StoreError::Internal(e)) if e.to_string().contains("panicked"))
        );
        assert_eq!(
            conns.commits(),
            2,
            "one commit for the waiting write, one for the five"
        );

        let kept = stored(&conns).await;
        assert_eq!(kept, vec![1, 4, 5], "the failed writes left nothing behind");
        // The writer goes on after a panic.
        insert(&conns, 6, "ok").await.unwrap();
    }

    #[tokio::test]
    async fn a_write_alone_is_committed_or_rolled_back_as_its_own_transaction() {
        let (_shared, conns) = connections("CREATE TABLE t (x INTEGER NOT NULL)");
        // Each awaited before the next is queued, so each is a batch of one.
        insert(&conns, 1, "ok").await.unwrap();
        let conflict = insert(&conns, 2, "conflict").await;
        assert!(
            matches!(conflict, Err(StoreError::VersionConflict)),
            "{conflict:?}"
        );
        let panicked = insert(&conns, 3, "panic").await;
        assert!(
            matches!(&panicked, Err(StoreError::Internal(e)) if e.to_string().contains("panicked"))
        );
        insert(&conns, 4, "ok").await.unwrap();
        assert_eq!(
            conns.commits(),
            2,
            "the two failed writes committed nothing"
        );
        let kept = stored(&conns).await;
        assert_eq!(kept, vec![1, 4], "the failed writes left nothing behind");
    }

    #[tokio::test]
    async fn a_failed_commit_fails_every_write_of_its_batch() {
        // A deferred foreign key is checked at the commit: the batch that breaks it cannot
        // commit, and none of its writes is acknowledged.
        let (_shared, conns) = connections(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE p (id INTEGER PRIMARY KEY);
             CREATE TABLE t (x INTEGER NOT NULL REFERENCES p (id) DEFERRABLE INITIALLY DEFERRED);
             INSERT INTO p (id) VALUES (1);",
        );
        let outcomes = queued_in_one_batch(&conns, &[(1, "ok"), (1, "ok"), (7, "ok")]).await;
        // The write of 7 breaks the key: its batch, all three, cannot commit.
        assert!(
            outcomes
                .iter()
                .all(|outcome| matches!(outcome, Err(StoreError::Unavailable(_)))),
            "{outcomes:?}"
        );
        let kept: i64 = conns
            .read(|conn| {
                conn.query_row("SELECT count(*) FROM t", [], |row| row.get(0))
                    .map_err(map_err)
            })
            .await
            .unwrap();
        assert_eq!(kept, 0);
        insert(&conns, 1, "ok").await.unwrap();
    }
}
