//! Integration tests through the router, every scenario on every backend.

mod accounts;
mod binary;
mod common;
mod http_errors;
mod push_tokens;
