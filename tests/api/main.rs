//! Integration tests, one test binary. Most drive the router in-process; a
//! few start the real binary on port 0. Every scenario runs on SQLite and on
//! PostgreSQL, each test on a database of its own: see `support` for how a
//! scenario is declared, and for everything the files share.

mod support;

mod accounts;
mod binary;
mod cache;
mod client_address;
mod concurrency;
mod docs;
mod durability;
mod faults;
mod hostile;
mod http_errors;
mod limits;
mod notify;
mod openapi;
mod ops;
mod outage;
mod providers;
mod push_socket;
mod push_tokens;
mod request_log;
mod secret_logs;
mod tls;
mod transfer;
