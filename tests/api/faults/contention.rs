//! Many clients of one user POSTing at once to the real binary, with no
//! fault at all: every POST is answered 201 at a serial of its own.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::support::api::{push_token, MESSAGE};
use crate::support::every_database;
use crate::support::server::Server;
use crate::support::wire::{try_call, Outcome};

/// Many clients of one user POST new tokens to one family at once, with no
/// fault at all: each POST is answered 201 at a serial of its own.
#[every_database]
async fn concurrent_posts_by_one_user_are_all_answered_201(database_url: &str) {
    const CLIENTS: usize = 50;
    const POSTS: u32 = 20;
    let server = Server::start(database_url).await;
    let session = Arc::new(server.session("poster_1").await);
    let tokens = Arc::new(AtomicU32::new(1));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (address, session, tokens) = (server.address.clone(), session.clone(), tokens.clone());
        tasks.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..POSTS {
                let token = push_token(tokens.fetch_add(1, Ordering::Relaxed));
                let body = json!({ "push_token": token, "language": "en" });
                let (outcome, _) =
                    try_call(&address, "POST", MESSAGE, Some(&session), Some(&body)).await;
                answers.push(outcome);
            }
            answers
        }));
    }
    let (mut created, mut refused) = (0, Vec::new());
    for task in tasks {
        for outcome in task.await.unwrap() {
            match outcome {
                Outcome::Answered { status: 201, .. } => created += 1,
                other => refused.push(format!("{other:?}")),
            }
        }
    }
    let (status, rows) = server.call("GET", MESSAGE, Some(&session), None).await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap().len();
    server.stop().await;
    assert_eq!(rows, created, "one row per 201");
    assert!(
        refused.is_empty(),
        "{} of {} POSTs were not answered 201, e.g. {:?}",
        refused.len(),
        CLIENTS * POSTS as usize,
        &refused[..refused.len().min(3)]
    );
}
