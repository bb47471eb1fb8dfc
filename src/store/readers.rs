//! The SQLite read connections: a small pool of our own. sqlx's pool tests
//! every connection it takes back with a ping, a round trip to the
//! connection's worker thread that costs as much as the query it follows; a
//! connection to a local file needs no such test (a query cut short by a
//! dropped request leaves nothing behind on a connection that never opens a
//! transaction), so reads hand connections back without one.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::PoolStats;

#[derive(Debug)]
pub struct Readers {
    options: SqliteConnectOptions,
    idle: Mutex<Vec<SqliteConnection>>,
    /// One per connection that may be in use at once.
    permits: Arc<Semaphore>,
    open: AtomicU32,
    max: u32,
    /// How long a read waits for a connection before it fails (503).
    wait: Duration,
}

impl Readers {
    /// Up to `max` connections opened with `options`, as they are needed.
    pub fn new(options: SqliteConnectOptions, max: u32, wait: Duration) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max as usize)),
            open: AtomicU32::new(0),
            max,
            wait,
        })
    }

    /// A connection for one read, back in the pool when dropped.
    pub async fn acquire(self: &Arc<Self>) -> Result<Reader, sqlx::Error> {
        let permit = tokio::time::timeout(self.wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle().pop();
        let conn = match idle {
            Some(conn) => conn,
            None => {
                let conn = self.options.connect().await?;
                self.open.fetch_add(1, Ordering::Relaxed);
                conn
            }
        };
        Ok(Reader {
            conn: Some(conn),
            readers: self.clone(),
            _permit: permit,
        })
    }

    /// Refuses new reads, then closes the idle connections (those in use
    /// close when their read ends).
    pub async fn close(&self) {
        self.permits.close();
        let idle = std::mem::take(&mut *self.idle());
        for conn in idle {
            self.open.fetch_sub(1, Ordering::Relaxed);
            let _ = conn.close().await;
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.open.load(Ordering::Relaxed),
            idle: self.idle().len() as u32,
            max: self.max,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A read connection on loan.
pub struct Reader {
    conn: Option<SqliteConnection>,
    readers: Arc<Readers>,
    _permit: OwnedSemaphorePermit,
}

impl Deref for Reader {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        self.conn
            .as_ref()
            .expect("a reader holds its connection until dropped")
    }
}

impl DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn
            .as_mut()
            .expect("a reader holds its connection until dropped")
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.readers.permits.is_closed() {
            // Closing: dropping the connection closes it.
            self.readers.open.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.readers.idle().push(conn);
        }
    }
}
