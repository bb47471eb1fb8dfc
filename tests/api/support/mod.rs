//! What the test files share, and the only place they import from: the
//! server in-process (`TestApp`) and the databases tests run on, the real
//! binary (`Server`) and raw HTTP over TCP, the API's routes and bodies, the
//! checks several files make, and the writers' model of what the server
//! acknowledged.
//!
//! A scenario is declared where it is written, on every backend:
//!
//! ```text
//! #[every_backend]
//! async fn put_creates_with_201_then_updates_with_200(app: TestApp) { … }
//!
//! #[every_database]
//! async fn user_add_prints_the_id_and_the_user_can_log_in(database_url: &str) { … }
//! ```
//!
//! Each becomes a module of tests, `…::put_creates_with_201_then_updates_with_200::sqlite`
//! and `…::postgres`, made by [`backend_tests!`]. A scenario without its
//! attribute is dead code, which the lints refuse.

pub mod accounts;
pub mod api;
pub mod app;
pub mod db;
pub mod openapi;
pub mod push;
pub mod push_tokens;
pub mod server;
pub mod standin;
pub mod throwaway_postgres;
pub mod wire;
pub mod writers;

pub use app::{Reply, TestApp, TestUser};
pub use db::TestDb;
pub use pushtoken_test_macros::{every_backend, every_database};

/// The tests of one scenario, one per backend, in a module named after it:
/// what `#[every_backend]` (`app name`: a [`TestApp`] on a fresh database)
/// and `#[every_database]` (`database name`: a fresh database's URL) write
/// beside the scenario. The backends are listed here and nowhere else.
macro_rules! backend_tests {
    (app $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::TestApp::sqlite().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::TestApp::postgres().await).await;
            }
        }
    };
    (database $name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::support::TestDb::sqlite();
                super::$name(&db.url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let db = $crate::support::TestDb::postgres().await;
                super::$name(&db.url()).await;
            }
        }
    };
}
pub(crate) use backend_tests;
