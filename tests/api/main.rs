//! Integration tests through the router, every scenario on every backend.

mod accounts;
mod binary;
mod common;
mod concurrency;
mod durability;
mod faults;
mod hostile;
mod http_errors;
mod limits;
mod openapi;
mod ops;
mod outage;
mod push_tokens;
mod secret_logs;
mod tls;
