//! [`SqliteThread`]: one SQLite connection on a thread of its own, reached from async code
//! through a channel. A query never runs on a tokio worker (where it would stall every
//! session on that worker for as long as the disk takes), and never on tokio's blocking pool
//! (whose threads come and go, each needing its own connection). One writer per file is what
//! SQLite serves best anyway.
//!
//! ```ignore
//! let db = SqliteThread::open(path, "suppressions", |conn| conn.execute_batch(SCHEMA)).await?;
//! let n = db.call(move |conn| Ok(conn.execute("DELETE FROM t WHERE at < ?1", [cutoff])?)).await?;
//! ```

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::StoreError;

/// Work for the thread: runs with its connection.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A handle on the thread that owns one SQLite connection; cheap to clone. The thread ends
/// when the last handle is dropped.
#[derive(Clone)]
pub struct SqliteThread {
    jobs: mpsc::Sender<Job>,
    /// The thread's name (`sqlite-<name>`), for [`StoreError::Stopped`].
    name: &'static str,
}

impl std::fmt::Debug for SqliteThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteThread")
            .field("name", &self.name)
            .finish()
    }
}

impl SqliteThread {
    /// Opens (creating it and its directory if needed) the database at `path` on a new thread
    /// named `sqlite-<name>`, with a WAL journal and `synchronous=FULL` (a committed
    /// transaction survives a crash or a power loss), foreign keys on and a 10 s busy
    /// timeout; then runs `setup` (create the tables) there before any call.
    pub async fn open(
        path: &Path,
        name: &'static str,
        setup: impl FnOnce(&mut Connection) -> rusqlite::Result<()> + Send + 'static,
    ) -> Result<SqliteThread, StoreError> {
        let (jobs, queue) = mpsc::channel::<Job>();
        let (opened, answer) = oneshot::channel();
        let path = path.to_path_buf();
        std::thread::Builder::new()
            .name(format!("sqlite-{name}"))
            .spawn(move || {
                let mut conn = match connect(&path).and_then(|mut conn| {
                    setup(&mut conn).map_err(|source| StoreError::Open {
                        path: path.clone(),
                        source,
                    })?;
                    Ok(conn)
                }) {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return;
                    }
                };
                let _ = opened.send(Ok(()));
                while let Ok(job) = queue.recv() {
                    // A job that panics loses its answer (the caller sees Stopped), not the
                    // thread: the next calls still run.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                }
            })
            .map_err(|source| StoreError::Thread { name, source })?;
        answer.await.map_err(|_| StoreError::Stopped(name))??;
        Ok(SqliteThread { jobs, name })
    }

    /// Runs `f` with the connection on the store's thread and returns its result. Calls run
    /// one at a time, in the order they were made.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, answer) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let _ = done.send(f(conn));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Stopped(self.name))?;
        answer.await.map_err(|_| StoreError::Stopped(self.name))?
    }
}

impl SqliteThread {
    /// [`SqliteThread::call`] for synchronous code (a reload's first phase): blocks the
    /// calling thread until the store's thread has run `f`, so keep `f` short.
    pub fn call_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, answer) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |conn| {
            let _ = done.send(f(conn));
        });
        self.jobs
            .send(job)
            .map_err(|_| StoreError::Stopped(self.name))?;
        answer.recv().map_err(|_| StoreError::Stopped(self.name))?
    }
}

/// Opens `path` the one way herald opens SQLite files (directories and the new file's name
/// flushed, WAL, `synchronous=FULL`, busy timeout), for a caller that keeps the connection on
/// a thread of its own (the history writer).
pub(crate) fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    connect(path)
}

/// Opens the file with herald's durability settings.
fn connect(path: &Path) -> Result<Connection, StoreError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        create_dir_durably(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let open = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open)?;
    // SQLite flushes the directory for its journal and WAL, never for the database file it
    // creates: flush the name here, before anything is acknowledged.
    if let Some(dir) = dir {
        sync_dir(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    conn.busy_timeout(Duration::from_secs(10)).map_err(open)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(open)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(open)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(open)?;
    Ok(conn)
}

/// `create_dir_all`, then a flush of the parent of each directory it created (a power cut
/// must not take away the directory, with the database in it, after a commit was flushed).
fn create_dir_durably(dir: &Path) -> std::io::Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    std::fs::create_dir_all(dir)?;
    for created in missing {
        if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// fsync(2) on a directory: its names (new files, new directories) become durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_run_on_the_thread_in_order_and_a_panic_does_not_stop_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteThread::open(&dir.path().join("sub/t.sqlite"), "test", |c| {
            c.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
        })
        .await
        .unwrap();
        for v in 0..3 {
            db.call(move |c| Ok(c.execute("INSERT INTO t (v) VALUES (?1)", [v])?))
                .await
                .unwrap();
        }
        let thread = db
            .call(|_| Ok(std::thread::current().name().map(str::to_string)))
            .await
            .unwrap();
        assert_eq!(thread.as_deref(), Some("sqlite-test"));
        let lost = db
            .call(|_| -> Result<(), StoreError> { panic!("a bug") })
            .await;
        assert!(matches!(lost, Err(StoreError::Stopped("test"))));
        let sum: i64 = db
            .call(|c| Ok(c.query_row("SELECT sum(v) FROM t", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(sum, 3);
    }

    #[tokio::test]
    async fn a_bad_schema_is_an_open_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = SqliteThread::open(&dir.path().join("t.sqlite"), "bad", |c| {
            c.execute_batch("CREATE TABLEX")
        })
        .await
        .unwrap_err();
        assert!(matches!(e, StoreError::Open { .. }), "{e}");
    }
}
