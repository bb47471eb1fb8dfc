//! The API's routes, the secrets the tests use, and request bodies.

use serde_json::{json, Value};

/// The registration key every test server is configured with.
pub const API_KEY: &str = "test-registration-key";
/// The password of every test account.
pub const PASSWORD: &str = "password_1";

pub const SIGN_UP: &str = "/v1/api/user";
pub const LOGIN: &str = "/v1/api/user/login";
pub const LOGOUT: &str = "/v1/api/user/logout";
pub const REFRESH: &str = "/v1/api/user/refresh";
/// The ring push-token family.
pub const RING: &str = "/v1/api/user/token";
/// The message push-token family.
pub const MESSAGE: &str = "/v1/api/user/message/token";
pub const FAMILIES: [&str; 2] = [RING, MESSAGE];

/// A valid sign-up body with only the required fields.
pub fn sign_up_body(username: &str) -> Value {
    json!({ "username": username, "password": PASSWORD, "apikey": API_KEY })
}

/// A valid sign-up body with every field, the optional ones unique to `n`.
pub fn full_sign_up_body(username: &str, n: u32) -> Value {
    json!({
        "username": username,
        "password": PASSWORD,
        "apikey": API_KEY,
        "email": format!("user{n}@example.com"),
        "phone": format!("+86138{n:08}"),
        "realm": "home",
        "code": "123456",
    })
}

/// A login body.
pub fn login_body(username: &str, password: &str) -> Value {
    json!({ "username": username, "password": password })
}

/// How long a server keeps a session or a row list in memory, unless told
/// otherwise: the longest a change made elsewhere (another instance, a
/// `pushtoken` command) takes to be seen by it.
pub const CACHE_LIFETIME: std::time::Duration = std::time::Duration::from_millis(50);

/// A valid 64-character push token, distinct for each `n`.
pub fn push_token(n: u32) -> String {
    format!("{n:064x}")
}

/// A minimal valid registration body.
pub fn registration(n: u32) -> Value {
    json!({ "push_token": push_token(n), "language": "en" })
}

/// `body` with `field` set to `value`.
pub fn with(mut body: Value, field: &str, value: Value) -> Value {
    body[field] = value;
    body
}

/// `body` without `field`.
pub fn without(mut body: Value, field: &str) -> Value {
    body.as_object_mut().expect("object").remove(field);
    body
}
