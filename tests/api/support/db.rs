//! The databases tests run on: a temporary SQLite file, or a fresh
//! PostgreSQL database on the server at `TEST_DATABASE_URL` (or, when
//! nothing answers there, on a throwaway server of the test process's own);
//! each is removed when the test ends.

use std::path::PathBuf;

use tempfile::TempDir;

use super::throwaway_postgres;

/// The PostgreSQL server the tests use: `TEST_DATABASE_URL`, else the local
/// server at 127.0.0.1:5432; when nothing answers there, a throwaway server
/// started from the installed binaries (see `throwaway_postgres`). Each
/// test makes a database of its own there. Panics with a one-line reason
/// when there is none, so a missing server never skips tests.
pub fn postgres_admin_url() -> String {
    let configured = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    throwaway_postgres::admin_url(&configured).unwrap_or_else(|why| panic!("{why}"))
}

/// Where a test's database lives; removed when the test ends.
pub enum TestDb {
    Sqlite { dir: TempDir },
    Postgres { admin_url: String, name: String },
}

impl TestDb {
    pub fn sqlite() -> Self {
        TestDb::Sqlite {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// A new, empty PostgreSQL database; panics loudly when the server
    /// cannot be reached, so a missing server never skips tests.
    pub async fn postgres() -> Self {
        use sqlx::Connection;
        let admin_url = postgres_admin_url();
        let name = format!("pushtoken_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL at TEST_DATABASE_URL={admin_url} is not reachable: {e}")
            });
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        TestDb::Postgres { admin_url, name }
    }

    pub fn url(&self) -> String {
        match self {
            TestDb::Sqlite { dir } => {
                format!("sqlite://{}", dir.path().join("db/pushtoken.db").display())
            }
            TestDb::Postgres { admin_url, name } => database_url(admin_url, name),
        }
    }

    pub fn sqlite_dir(&self) -> Option<PathBuf> {
        match self {
            TestDb::Sqlite { dir } => Some(dir.path().to_path_buf()),
            TestDb::Postgres { .. } => None,
        }
    }
}

/// `admin_url` with its database name replaced by `name`.
pub fn database_url(admin_url: &str, name: &str) -> String {
    let (base, query) = match admin_url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (admin_url, String::new()),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    format!("{}/{name}{query}", &base[..host_end])
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let TestDb::Postgres { admin_url, name } = self else {
            return;
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        // Drop runs inside the test's runtime: use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop a test database");
        }
    }
}
