//! Sign-up, login, logout, refresh and session handling.

use std::path::Path;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use pushtoken::unix_now;
use serde_json::{json, Value};

use crate::support::api::{
    full_sign_up_body, push_token, registration, sign_up_body, with, without, API_KEY, FAMILIES,
    LOGIN, LOGOUT, MESSAGE, PASSWORD, REFRESH, RING, SIGN_UP,
};
use crate::support::{every_backend, Reply, TestApp};

const DAY: i64 = 86_400;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

async fn sign_up(app: &TestApp, body: Value) -> Reply {
    app.post_anonymous(SIGN_UP, body).await
}

/// Logs in and asserts the login succeeded; returns the reply body.
async fn login_ok(app: &TestApp, login: &str, password: &str) -> Value {
    let reply = app.login(login, password).await;
    reply.assert_success(StatusCode::CREATED);
    reply.body
}

/// The vendor's logout: username and token in the body, no header.
async fn logout(app: &TestApp, username: &str, token: &str) -> Reply {
    app.post_anonymous(LOGOUT, json!({ "username": username, "token": token }))
        .await
}

async fn refresh(app: &TestApp, reflash_key: &str) -> Reply {
    app.post_anonymous(REFRESH, json!({ "reflash_key": reflash_key }))
        .await
}

/// Asserts that `token` opens a session: listing ring tokens answers 200 and
/// an array.
#[track_caller]
fn assert_listed(reply: &Reply) {
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    assert!(reply.body.is_array(), "body: {}", reply.body);
}

async fn assert_token_valid(app: &TestApp, token: &str) {
    let reply = app.get(RING, token).await;
    assert_listed(&reply);
}

async fn assert_token_invalid(app: &TestApp, token: &str) {
    let reply = app.get(RING, token).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
}

/// Asserts a login-like answer: message, id, token, key, expiry and status.
#[track_caller]
fn assert_session_issued(body: &Value, id: i64, before: i64, after: i64, ttl: i64) {
    assert_eq!(body["message"], "success", "body: {body}");
    assert_eq!(body["id"], id, "body: {body}");
    let token = body["token"].as_str().expect("token is a string");
    let key = body["reflash_key"]
        .as_str()
        .expect("reflash_key is a string");
    assert!(token.len() >= 32, "token too short: {token}");
    assert!(key.len() >= 32, "reflash_key too short: {key}");
    assert_ne!(token, key);
    let time = body["time"].as_i64().expect("time is an integer");
    assert!(
        (before + ttl..=after + ttl).contains(&time),
        "time {time} is not now + {ttl}s (now was {before}..={after})"
    );
    assert_eq!(body["logout_status"], 0, "body: {body}");
}

fn text(body: &Value, key: &str) -> String {
    body[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {body}"))
        .to_owned()
}

/// Whether any file under `dir` contains `needle`.
fn files_contain(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).expect("read dir").any(|entry| {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files_contain(&path, needle)
        } else {
            let bytes = std::fs::read(&path).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        }
    })
}

// ---------------------------------------------------------------------------
// Sign-up
// ---------------------------------------------------------------------------

#[every_backend]
async fn sign_up_returns_201_with_the_new_id(app: TestApp) {
    let reply = app
        .post_anonymous(
            "/v1/api/user",
            json!({ "username": "alice_1", "password": PASSWORD, "apikey": API_KEY }),
        )
        .await;
    reply.assert_success(StatusCode::CREATED);
    assert!(reply.body["id"].as_i64().unwrap() > 0);
}

#[every_backend]
async fn sign_up_gives_each_account_its_own_id_that_login_reports(app: TestApp) {
    let alice = app.sign_up("alice_1").await;
    let bob = app.sign_up("bob_123").await;
    assert_ne!(alice, bob);
    assert_eq!(login_ok(&app, "alice_1", PASSWORD).await["id"], alice);
    assert_eq!(login_ok(&app, "bob_123", PASSWORD).await["id"], bob);
}

#[every_backend]
async fn sign_up_accepts_every_field_at_its_limits(app: TestApp) {
    let good_usernames = [
        "abcdef".to_owned(),
        "a".repeat(32),
        "______".to_owned(),
        "123abc".to_owned(),
        "000000a".to_owned(),
        "ABC_def_123".to_owned(),
    ];
    for username in &good_usernames {
        sign_up(&app, sign_up_body(username))
            .await
            .assert_success(StatusCode::CREATED);
        login_ok(&app, username, PASSWORD).await;
    }
    let good_passwords = [
        "12345678",
        "abcdefgh",
        "ABCDEFGHIJKLMNOP",
        "_!@#$%^&*()+-=",
        "Aa1_!@#$",
        "Passw0rd=+-)(*&^",
    ];
    for (i, password) in good_passwords.iter().enumerate() {
        let username = format!("pw_case_{i}");
        let body = with(sign_up_body(&username), "password", json!(password));
        sign_up(&app, body)
            .await
            .assert_success(StatusCode::CREATED);
        login_ok(&app, &username, password).await;
    }
    let good_optionals = [
        ("email", json!("a@b")),
        ("email", json!(format!("{}@example.com", "e".repeat(28)))),
        ("email", json!("alice+tag@example.co.uk")),
        ("phone", json!("123456")),
        ("phone", json!("+123457")),
        ("phone", json!("12345678901234567890")),
        ("phone", json!("+12345678901234567891")),
        ("realm", json!("r")),
        ("realm", json!("r".repeat(32))),
        ("realm", json!("my home")),
        ("code", json!("000000")),
        ("code", json!("999999")),
    ];
    assert_eq!(good_optionals[1].1.as_str().unwrap().len(), 40);
    for (i, (field, value)) in good_optionals.into_iter().enumerate() {
        let body = with(sign_up_body(&format!("opt_case_{i}")), field, value.clone());
        let reply = sign_up(&app, body).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "{field}={value}: {}",
            reply.body
        );
        assert_eq!(reply.body["message"], "success");
    }
}

#[every_backend]
async fn sign_up_with_username_out_of_6_to_32_chars_is_username_length_error(app: TestApp) {
    for username in [
        "".to_owned(),
        "a".into(),
        "abcde".into(),
        "a".repeat(33),
        "a".repeat(100),
    ] {
        let reply = sign_up(&app, sign_up_body(&username)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "username length error");
    }
}

#[every_backend]
async fn sign_up_with_bad_username_characters_or_all_digits_is_username_error(app: TestApp) {
    let bad = [
        "123456".to_owned(),
        "0".repeat(32),
        "alice-1".into(),
        "alice 1".into(),
        "alice.1".into(),
        "alice@example.com".into(),
        "alicé_12".into(),
        "alice_1\n".into(),
        "ali\u{0}ce_1".into(),
        "爱丽丝_12345".into(),
    ];
    for username in bad {
        let reply = sign_up(&app, sign_up_body(&username)).await;
        assert_eq!(
            reply.body["message"], "username error",
            "{username:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::BAD_REQUEST, "username error");
    }
}

#[every_backend]
async fn sign_up_with_password_out_of_8_to_16_chars_is_password_length_error(app: TestApp) {
    for password in [
        "".to_owned(),
        "short".into(),
        "1234567".into(),
        "a".repeat(17),
        "a".repeat(64),
    ] {
        let body = with(sign_up_body("alice_1"), "password", json!(password));
        let reply = sign_up(&app, body).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "password length error");
    }
}

#[every_backend]
async fn sign_up_with_bad_password_characters_is_password_error(app: TestApp) {
    let bad = [
        "password 1",
        "password~1",
        "password.1",
        "pass/word1",
        "pass\"word1",
        "pass'word1",
        "pass,word1",
        "pass?word1",
        "pass:word1",
        "pass;word1",
        "pass<word>1",
        "pass[word]1",
        "pass{word}1",
        "pass|word1",
        "pass\\word1",
        "pass`word1",
        "password\t1",
        "pässword1",
        "密码密码密码密码",
    ];
    for password in bad {
        let body = with(sign_up_body("alice_1"), "password", json!(password));
        let reply = sign_up(&app, body).await;
        assert_eq!(
            reply.body["message"], "password error",
            "{password:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::BAD_REQUEST, "password error");
    }
}

#[every_backend]
async fn sign_up_without_apikey_is_undefined_apikey(app: TestApp) {
    let absent = without(sign_up_body("alice_1"), "apikey");
    sign_up(&app, absent)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "undefined apikey");
    let null = with(sign_up_body("alice_1"), "apikey", Value::Null);
    sign_up(&app, null)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "undefined apikey");
}

#[every_backend]
async fn sign_up_with_wrong_apikey_is_403_apikey_error(app: TestApp) {
    let bad = [
        "".to_owned(),
        "wrong".into(),
        API_KEY.to_uppercase(),
        format!("{API_KEY}x"),
        format!("{API_KEY} "),
        API_KEY[..API_KEY.len() - 1].to_owned(),
    ];
    for key in bad {
        let reply = sign_up(&app, with(sign_up_body("alice_1"), "apikey", json!(key))).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{key:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::FORBIDDEN, "apikey error");
    }
    app.login("alice_1", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
}

#[every_backend]
async fn sign_up_is_disabled_when_no_api_key_is_configured(app: TestApp) {
    app.sign_up("alice_1").await;
    let keyless = app.another_instance_with(&["--api-key", ""]).await;
    for key in [API_KEY, "", "anything"] {
        let body = with(sign_up_body("bob_1234"), "apikey", json!(key));
        let reply = keyless.post_anonymous(SIGN_UP, body).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{key:?}: {}",
            reply.body
        );
        assert_eq!(
            reply.body["message"], "apikey error",
            "{key:?}: {}",
            reply.body
        );
    }
    // Only sign-up is disabled: existing accounts still log in.
    keyless
        .login("alice_1", PASSWORD)
        .await
        .assert_success(StatusCode::CREATED);
    // Nothing was created by the refused sign-ups.
    app.sign_up("bob_1234").await;
}

#[every_backend]
async fn sign_up_with_email_over_40_chars_is_email_length_error(app: TestApp) {
    for email in [
        format!("{}@example.com", "e".repeat(29)),
        format!("{}@example.com", "e".repeat(100)),
    ] {
        let body = with(sign_up_body("alice_1"), "email", json!(email));
        sign_up(&app, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "email length error");
    }
}

#[every_backend]
async fn sign_up_with_email_without_at_sign_is_email_error(app: TestApp) {
    for email in ["alice.example.com", "", "alice"] {
        let body = with(sign_up_body("alice_1"), "email", json!(email));
        let reply = sign_up(&app, body).await;
        assert_eq!(
            reply.body["message"], "email error",
            "{email:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::BAD_REQUEST, "email error");
    }
}

#[every_backend]
async fn sign_up_with_phone_not_6_to_20_digits_is_phone_error(app: TestApp) {
    let bad = [
        "12345",
        "+12345",
        "123456789012345678901",
        "+123456789012345678901",
        "",
        "+",
        "12345a",
        "123 456",
        "123-456-789",
        "++123456",
        "123456+",
        "(123)456789",
        " 123456",
        "１２３４５６",
    ];
    for phone in bad {
        let body = with(sign_up_body("alice_1"), "phone", json!(phone));
        let reply = sign_up(&app, body).await;
        assert_eq!(
            reply.body["message"], "phone error",
            "{phone:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::BAD_REQUEST, "phone error");
    }
}

#[every_backend]
async fn sign_up_with_realm_out_of_1_to_32_chars_is_realm_length_error(app: TestApp) {
    for realm in ["".to_owned(), "r".repeat(33), "r".repeat(100)] {
        let body = with(sign_up_body("alice_1"), "realm", json!(realm));
        sign_up(&app, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "realm length error");
    }
}

#[every_backend]
async fn sign_up_with_code_not_a_string_of_6_digits_is_code_error(app: TestApp) {
    let bad = [
        "12345",
        "1234567",
        "12345a",
        "",
        "abcdef",
        " 12345",
        "12 345",
        "１２３４５６",
        "-12345",
        "+12345",
    ];
    for code in bad {
        let body = with(sign_up_body("alice_1"), "code", json!(code));
        let reply = sign_up(&app, body).await;
        assert_eq!(
            reply.body["message"], "code error",
            "{code:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::BAD_REQUEST, "code error");
    }
}

#[every_backend]
async fn sign_up_with_field_of_wrong_json_type_is_format_error(app: TestApp) {
    let wrong_types = [
        json!(123456789),
        json!(1.5),
        json!(true),
        json!(["alice_1"]),
        json!({ "value": "alice_1" }),
    ];
    for field in [
        "username", "password", "apikey", "email", "phone", "realm", "code",
    ] {
        for value in &wrong_types {
            let body = with(full_sign_up_body("alice_1", 1), field, value.clone());
            let reply = sign_up(&app, body).await;
            let expected = format!("{field} format error");
            assert_eq!(
                reply.body["message"], expected,
                "{field}={value}: {}",
                reply.body
            );
            reply.assert_error(StatusCode::BAD_REQUEST, &expected);
        }
    }
    // `"code": 123456` is six digits, but not a string.
    let body = with(sign_up_body("alice_1"), "code", json!(123456));
    sign_up(&app, body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "code format error");
}

#[every_backend]
async fn sign_up_without_a_required_field_is_undefined_field(app: TestApp) {
    for field in ["username", "password", "apikey"] {
        let reply = sign_up(&app, without(sign_up_body("alice_1"), field)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, &format!("undefined {field}"));
    }
    sign_up(&app, json!({}))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "undefined username");
}

#[every_backend]
async fn sign_up_treats_null_as_absent(app: TestApp) {
    for field in ["username", "password", "apikey"] {
        let reply = sign_up(&app, with(sign_up_body("alice_1"), field, Value::Null)).await;
        reply.assert_error(StatusCode::BAD_REQUEST, &format!("undefined {field}"));
    }
    let body = json!({
        "username": "alice_1", "password": PASSWORD, "apikey": API_KEY,
        "email": null, "phone": null, "realm": null, "code": null,
    });
    sign_up(&app, body)
        .await
        .assert_success(StatusCode::CREATED);
    login_ok(&app, "alice_1", PASSWORD).await;
}

#[every_backend]
async fn sign_up_reports_the_first_failing_field_in_listed_order(app: TestApp) {
    let good = full_sign_up_body("alice_1", 1);
    let cases = [
        // A bad username and a missing password: the username is reported.
        (json!({ "username": "abc" }), StatusCode::BAD_REQUEST, "username length error"),
        (
            json!({ "username": "123456", "password": 12345678 }),
            StatusCode::BAD_REQUEST,
            "username error",
        ),
        (
            json!({ "username": 42, "password": "x" }),
            StatusCode::BAD_REQUEST,
            "username format error",
        ),
        (
            json!({ "username": "alice_1", "password": "short", "apikey": "wrong" }),
            StatusCode::BAD_REQUEST,
            "password length error",
        ),
        (
            json!({ "username": "alice_1", "email": "bad" }),
            StatusCode::BAD_REQUEST,
            "undefined password",
        ),
        (
            json!({ "username": "alice_1", "password": PASSWORD, "email": "bad", "phone": "1" }),
            StatusCode::BAD_REQUEST,
            "undefined apikey",
        ),
        (
            with(with(good.clone(), "apikey", json!("wrong")), "email", json!("bad")),
            StatusCode::FORBIDDEN,
            "apikey error",
        ),
        (
            with(with(good.clone(), "email", json!("bad")), "phone", json!("1")),
            StatusCode::BAD_REQUEST,
            "email error",
        ),
        (
            with(with(good.clone(), "email", json!(5)), "phone", json!("1")),
            StatusCode::BAD_REQUEST,
            "email format error",
        ),
        (
            with(with(good.clone(), "phone", json!("1")), "realm", json!("")),
            StatusCode::BAD_REQUEST,
            "phone error",
        ),
        (
            with(with(good.clone(), "realm", json!("")), "code", json!("1")),
            StatusCode::BAD_REQUEST,
            "realm length error",
        ),
        (
            with(good.clone(), "code", json!("1")),
            StatusCode::BAD_REQUEST,
            "code error",
        ),
        // The order is the API's, not the order of the keys in the body.
        (
            Value::String(
                r#"{"code":"1","realm":"","phone":"1","email":"bad","apikey":"wrong","password":"short","username":"abc"}"#
                    .into(),
            ),
            StatusCode::BAD_REQUEST,
            "username length error",
        ),
        (
            Value::String(
                r#"{"code":"1","realm":"","phone":"1","email":"bad","apikey":"wrong","password":"short_","username":"alice_1"}"#
                    .into(),
            ),
            StatusCode::BAD_REQUEST,
            "password length error",
        ),
    ];
    for (body, status, message) in cases {
        let reply = sign_up(&app, body.clone()).await;
        assert_eq!(
            (reply.status, reply.body["message"].as_str()),
            (status, Some(message)),
            "body {body}: {}",
            reply.body
        );
    }
}

#[every_backend]
async fn sign_up_ignores_unknown_fields(app: TestApp) {
    let body = json!({
        "username": "alice_1", "password": PASSWORD, "apikey": API_KEY,
        "os_push_version": "2.0", "id": 999, "admin": true,
        "extra": { "nested": [1, 2, 3] }, "password2": 7,
    });
    let reply = sign_up(&app, body).await;
    reply.assert_success(StatusCode::CREATED);
    assert_ne!(reply.body["id"], 999);
    assert_eq!(
        login_ok(&app, "alice_1", PASSWORD).await["id"],
        reply.body["id"]
    );
}

#[every_backend]
async fn sign_up_with_taken_username_is_409_username_exist(app: TestApp) {
    app.sign_up("alice_1").await;
    let again = with(sign_up_body("alice_1"), "password", json!("other_pass1"));
    sign_up(&app, again)
        .await
        .assert_error(StatusCode::CONFLICT, "username exist");
    // The account is untouched: the old password still works, the new does not.
    login_ok(&app, "alice_1", PASSWORD).await;
    app.login("alice_1", "other_pass1")
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
}

#[every_backend]
async fn sign_up_with_taken_email_is_409_email_exist(app: TestApp) {
    let body = with(
        sign_up_body("alice_1"),
        "email",
        json!("shared@example.com"),
    );
    sign_up(&app, body)
        .await
        .assert_success(StatusCode::CREATED);
    let body = with(
        sign_up_body("bob_1234"),
        "email",
        json!("shared@example.com"),
    );
    sign_up(&app, body)
        .await
        .assert_error(StatusCode::CONFLICT, "email exist");
    app.login("bob_1234", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
}

#[every_backend]
async fn sign_up_with_taken_phone_is_409_phone_exist(app: TestApp) {
    let body = with(sign_up_body("alice_1"), "phone", json!("+8613800138000"));
    sign_up(&app, body)
        .await
        .assert_success(StatusCode::CREATED);
    let body = with(sign_up_body("bob_1234"), "phone", json!("+8613800138000"));
    sign_up(&app, body)
        .await
        .assert_error(StatusCode::CONFLICT, "phone exist");
    app.login("bob_1234", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
}

#[every_backend]
async fn sign_up_with_taken_username_and_email_reports_the_username(app: TestApp) {
    sign_up(&app, full_sign_up_body("alice_1", 1))
        .await
        .assert_success(StatusCode::CREATED);
    sign_up(&app, full_sign_up_body("alice_1", 1))
        .await
        .assert_error(StatusCode::CONFLICT, "username exist");
    let email_and_phone = full_sign_up_body("bob_1234", 1);
    sign_up(&app, email_and_phone)
        .await
        .assert_error(StatusCode::CONFLICT, "email exist");
}

#[every_backend]
async fn sign_up_checks_the_body_before_whether_the_username_is_taken(app: TestApp) {
    app.sign_up("alice_1").await;
    let wrong_key = with(sign_up_body("alice_1"), "apikey", json!("wrong"));
    sign_up(&app, wrong_key)
        .await
        .assert_error(StatusCode::FORBIDDEN, "apikey error");
    let bad_code = with(sign_up_body("alice_1"), "code", json!("12"));
    sign_up(&app, bad_code)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "code error");
}

#[every_backend]
async fn rejected_sign_up_creates_nothing(app: TestApp) {
    let rejected = [
        (
            with(sign_up_body("alice_1"), "code", json!("12345")),
            StatusCode::BAD_REQUEST,
            "code error",
        ),
        (
            with(sign_up_body("alice_1"), "apikey", json!("wrong")),
            StatusCode::FORBIDDEN,
            "apikey error",
        ),
        (
            with(sign_up_body("alice_1"), "phone", json!("12")),
            StatusCode::BAD_REQUEST,
            "phone error",
        ),
    ];
    for (body, status, message) in rejected {
        sign_up(&app, body).await.assert_error(status, message);
        app.login("alice_1", PASSWORD)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
    // A conflict on the email leaves neither the username nor the phone taken.
    let bob = with(sign_up_body("bob_1234"), "email", json!("bob@example.com"));
    let bob_id = sign_up(&app, bob).await.body["id"].clone();
    let clash = with(
        with(sign_up_body("alice_1"), "email", json!("bob@example.com")),
        "phone",
        json!("+8613800138000"),
    );
    sign_up(&app, clash)
        .await
        .assert_error(StatusCode::CONFLICT, "email exist");
    app.login("alice_1", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    app.login("+8613800138000", PASSWORD)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    assert_eq!(
        login_ok(&app, "bob@example.com", PASSWORD).await["id"],
        bob_id
    );
    // The same username and phone are free afterwards.
    let fixed = with(
        with(sign_up_body("alice_1"), "email", json!("alice@example.com")),
        "phone",
        json!("+8613800138000"),
    );
    let reply = sign_up(&app, fixed).await;
    reply.assert_success(StatusCode::CREATED);
    assert_eq!(
        login_ok(&app, "alice_1", PASSWORD).await["id"],
        reply.body["id"]
    );
    assert_eq!(
        login_ok(&app, "+8613800138000", PASSWORD).await["id"],
        reply.body["id"]
    );
}

#[every_backend]
async fn sign_up_stores_the_password_as_argon2id_never_in_clear(app: TestApp) {
    app.sign_up("alice_1").await;
    let stored = app
        .state
        .store
        .find_credentials("alice_1")
        .await
        .expect("store answers")
        .expect("the account exists");
    assert!(
        stored.password_hash.starts_with("$argon2id$"),
        "not an Argon2id hash: {}",
        stored.password_hash
    );
    assert!(!stored.password_hash.contains(PASSWORD));
}

// ---------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------

#[every_backend]
async fn login_returns_the_five_vendor_keys_and_success(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let reply = app.login("alice_1", PASSWORD).await;
    reply.assert_success(StatusCode::CREATED);
    assert_eq!(reply.body["id"], id);
    assert!(reply.body["token"].as_str().unwrap().len() >= 32);
    assert!(reply.body["reflash_key"].as_str().unwrap().len() >= 32);
    assert!(reply.body["time"].as_i64().unwrap() > pushtoken::unix_now());
    assert_eq!(reply.body["logout_status"], 0);
    let token = reply.body["token"].as_str().unwrap();
    assert_token_valid(&app, token).await;
}

#[every_backend]
async fn login_session_expires_30_days_from_now_by_default(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let before = unix_now();
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    let after = unix_now();
    assert_session_issued(&body, id, before, after, 30 * DAY);
    assert!(body.get("data").is_none(), "no envelope: {body}");
}

#[every_backend]
async fn login_expiry_follows_the_session_ttl_setting(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let app = app.with_flags(&["--session-ttl", "1h"]).await;
    let before = unix_now();
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    let after = unix_now();
    assert_session_issued(&body, id, before, after, 3600);
}

#[every_backend]
async fn login_by_email_or_phone_opens_the_same_account(app: TestApp) {
    let body = full_sign_up_body("alice_1", 7);
    let email = text(&body, "email");
    let phone = text(&body, "phone");
    let id = sign_up(&app, body).await.body["id"].as_i64().expect("id");
    let other = app.user("bob_1234").await;
    app.post(RING, &other.token, registration(2)).await;
    for login in ["alice_1", email.as_str(), phone.as_str()] {
        let body = login_ok(&app, login, PASSWORD).await;
        assert_eq!(body["id"], id, "login as {login}");
        let reply = app.get(RING, &text(&body, "token")).await;
        assert_listed(&reply);
        assert_eq!(reply.body, json!([]), "login as {login} sees alice's rows");
    }
}

#[every_backend]
async fn login_with_wrong_password_or_unknown_user_is_the_same_401(app: TestApp) {
    sign_up(&app, full_sign_up_body("alice_1", 1))
        .await
        .assert_success(StatusCode::CREATED);
    let attempts = [
        ("alice_1", "wrong_pass1"),
        ("alice_1", ""),
        ("alice_1", &PASSWORD.to_uppercase()),
        ("nobody_1", PASSWORD),
        ("nobody@example.com", PASSWORD),
        ("+8613900000000", PASSWORD),
        ("", PASSWORD),
        ("user1@example.com", "wrong_pass1"),
    ];
    let mut first: Option<Reply> = None;
    for (username, password) in attempts {
        let reply = app.login(username, password).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "username or password error");
        if let Some(first) = &first {
            assert_eq!(reply.body, first.body, "{username}/{password}");
        } else {
            first = Some(reply);
        }
    }
}

#[every_backend]
async fn login_without_username_or_password_is_undefined_field(app: TestApp) {
    app.sign_up("alice_1").await;
    let cases = [
        (json!({}), "undefined username"),
        (json!({ "password": PASSWORD }), "undefined username"),
        (
            json!({ "username": null, "password": PASSWORD }),
            "undefined username",
        ),
        (json!({ "username": "alice_1" }), "undefined password"),
        (
            json!({ "username": "alice_1", "password": null }),
            "undefined password",
        ),
    ];
    for (body, message) in cases {
        let reply = app.post_anonymous(LOGIN, body.clone()).await;
        assert_eq!(reply.body["message"], message, "{body}: {}", reply.body);
        reply.assert_error(StatusCode::BAD_REQUEST, message);
    }
}

#[every_backend]
async fn login_with_field_of_wrong_json_type_is_format_error(app: TestApp) {
    app.sign_up("alice_1").await;
    let cases = [
        (
            json!({ "username": 12345678, "password": PASSWORD }),
            "username format error",
        ),
        (
            json!({ "username": ["alice_1"], "password": PASSWORD }),
            "username format error",
        ),
        (
            json!({ "username": "alice_1", "password": 12345678 }),
            "password format error",
        ),
        (
            json!({ "username": "alice_1", "password": true }),
            "password format error",
        ),
    ];
    for (body, message) in cases {
        let reply = app.post_anonymous(LOGIN, body.clone()).await;
        assert_eq!(reply.body["message"], message, "{body}: {}", reply.body);
        reply.assert_error(StatusCode::BAD_REQUEST, message);
    }
}

#[every_backend]
async fn login_ignores_unknown_fields_and_content_type(app: TestApp) {
    let id = app.sign_up("alice_1").await;
    let body = json!({
        "username": "alice_1", "password": PASSWORD,
        "os_push_version": "2.0", "apikey": "whatever", "id": 999,
    });
    for content_type in [
        None,
        Some("application/json; charset=UTF-8"),
        Some("text/plain"),
    ] {
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| vec![("content-type", c)])
            .unwrap_or_default();
        let reply = app
            .request(Method::POST, LOGIN, &headers, Some(body.clone()))
            .await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["id"], id, "{content_type:?}");
    }
}

#[every_backend]
async fn a_user_may_hold_several_sessions_at_once(app: TestApp) {
    app.sign_up("alice_1").await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        sessions.push(login_ok(&app, "alice_1", PASSWORD).await);
    }
    for session in &sessions {
        assert_token_valid(&app, &text(session, "token")).await;
    }
    // What one phone registers, the others see.
    let first = text(&sessions[0], "token");
    app.post(RING, &first, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app.get(RING, &text(&sessions[2], "token")).await;
    assert_eq!(reply.body[0]["push_token"], push_token(1), "{}", reply.body);
}

#[every_backend]
async fn session_tokens_and_keys_are_random_and_never_repeat(app: TestApp) {
    app.sign_up("alice_1").await;
    app.sign_up("bob_1234").await;
    let mut secrets = Vec::new();
    for username in ["alice_1", "alice_1", "alice_1", "bob_1234", "bob_1234"] {
        let body = login_ok(&app, username, PASSWORD).await;
        secrets.push(text(&body, "token"));
        secrets.push(text(&body, "reflash_key"));
    }
    for secret in &secrets {
        // At least 128 random bits: 32 hex digits or 22 base64 characters.
        assert!(secret.len() >= 22, "short secret {secret}");
        assert!(
            !secret.contains("alice") && !secret.contains("bob"),
            "{secret}"
        );
    }
    let mut unique = secrets.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), secrets.len(), "a secret repeats: {secrets:?}");
}

// ---------------------------------------------------------------------------
// Session tokens
// ---------------------------------------------------------------------------

#[every_backend]
async fn session_token_is_read_from_token_header_in_any_case_or_bearer(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_1234").await;
    app.post(RING, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let bearer = format!("Bearer {}", alice.token);
    let bearer_lower = format!("bearer {}", alice.token);
    let forms = [
        ("token", alice.token.as_str()),
        ("Token", alice.token.as_str()),
        ("TOKEN", alice.token.as_str()),
        ("Authorization", bearer.as_str()),
        ("authorization", bearer_lower.as_str()),
    ];
    for (name, value) in forms {
        let reply = app.request(Method::GET, RING, &[(name, value)], None).await;
        assert_listed(&reply);
        assert_eq!(
            reply.body.as_array().unwrap().len(),
            1,
            "{name}: {}",
            reply.body
        );
        assert_eq!(reply.body[0]["id"], alice.id, "{name}");
        assert_eq!(reply.body[0]["push_token"], push_token(1), "{name}");
    }
    // The header names the caller: bob's bearer token shows bob's (empty) list.
    let bob_bearer = format!("Bearer {}", bob.token);
    let reply = app
        .request(Method::GET, RING, &[("Authorization", &bob_bearer)], None)
        .await;
    assert_eq!(reply.body, json!([]));
}

#[every_backend]
async fn request_without_a_session_token_is_401_no_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    let cases: [&[(&str, &str)]; 6] = [
        &[],
        &[("token", "")],
        &[("Authorization", "Bearer")],
        &[("Authorization", "Bearer ")],
        &[("Authorization", "Basic YWxpY2VfMTpwYXNzd29yZF8x")],
        &[("x-token", &alice.token)],
    ];
    for base in FAMILIES {
        for headers in cases {
            let reply = app.request(Method::GET, base, headers, None).await;
            assert_eq!(
                reply.body["message"], "no token",
                "{headers:?}: {}",
                reply.body
            );
            reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
        }
    }
}

#[every_backend]
async fn unknown_session_token_is_401_invalid_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    let mut altered = alice.token.clone();
    let last = altered.pop().unwrap();
    altered.push(if last == '0' { '1' } else { '0' });
    let bad = [
        "garbage".to_owned(),
        "0".repeat(64),
        altered,
        alice.token[..alice.token.len() / 2].to_owned(),
        format!("{}{}", alice.token, alice.token),
        // A refresh key is not a session token.
        alice.reflash_key.clone(),
    ];
    for token in &bad {
        for base in FAMILIES {
            let reply = app.get(base, token).await;
            assert_eq!(
                reply.body["message"], "invalid token",
                "{token}: {}",
                reply.body
            );
            reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
        }
        let bearer = format!("Bearer {token}");
        let reply = app
            .request(Method::GET, MESSAGE, &[("Authorization", &bearer)], None)
            .await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn session_token_expires_after_the_configured_ttl(app: TestApp) {
    app.sign_up("alice_1").await;
    let app = app.with_flags(&["--session-ttl", "2s"]).await;
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    let token = text(&body, "token");
    assert_token_valid(&app, &token).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_token_invalid(&app, &token).await;
    let reply = app
        .request(Method::GET, MESSAGE, &[("Token", &token)], None)
        .await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    logout(&app, "alice_1", &token)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // A new login opens a new session.
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    assert_token_valid(&app, &text(&body, "token")).await;
}

#[every_backend]
async fn passwords_session_tokens_and_keys_are_never_stored_in_clear(app: TestApp) {
    let alice = app.user("alice_1").await;
    let second = login_ok(&app, "alice_1", PASSWORD).await;
    let rotated = refresh(&app, &text(&second, "reflash_key")).await;
    rotated.assert_success(StatusCode::CREATED);
    let secrets = [
        PASSWORD.to_owned(),
        alice.token.clone(),
        alice.reflash_key.clone(),
        text(&rotated.body, "token"),
        text(&rotated.body, "reflash_key"),
    ];
    let users = app.stored_text("users").await;
    assert_eq!(users.len(), 1);
    assert!(
        users[0].iter().any(|v| v == "alice_1"),
        "the read sees the data: {users:?}"
    );
    assert!(
        users[0].iter().any(|v| v.starts_with("$argon2id$")),
        "{users:?}"
    );
    let sessions = app.stored_text("sessions").await;
    assert_eq!(sessions.len(), 2, "two live sessions: {sessions:?}");
    assert!(
        sessions.iter().all(|row| !row.is_empty()),
        "text columns: {sessions:?}"
    );
    for value in users.iter().chain(&sessions).flatten() {
        for secret in &secrets {
            assert!(
                !value.contains(secret.as_str()),
                "{secret} stored in {value}"
            );
        }
    }
    // On SQLite, not in the file (or its journal) either.
    if let Some(dir) = app.db.sqlite_dir() {
        assert!(files_contain(&dir, b"alice_1"), "the scan sees the data");
        for secret in &secrets {
            assert!(!files_contain(&dir, secret.as_bytes()), "{secret} in clear");
        }
    }
}

// ---------------------------------------------------------------------------
// Logout
// ---------------------------------------------------------------------------

#[every_backend]
async fn logout_with_token_in_body_is_200_success_and_revokes_that_session(app: TestApp) {
    let alice = app.user("alice_1").await;
    let reply = logout(&app, &alice.username, &alice.token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body, json!({ "message": "success" }));
    assert_token_invalid(&app, &alice.token).await;
    // Logging out twice: the session is gone.
    logout(&app, &alice.username, &alice.token)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // Its refresh key is gone too.
    refresh(&app, &alice.reflash_key)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    // The account is not: logging in again works.
    let body = login_ok(&app, "alice_1", PASSWORD).await;
    assert_token_valid(&app, &text(&body, "token")).await;
}

#[every_backend]
async fn logout_keeps_the_users_other_sessions(app: TestApp) {
    let alice = app.user("alice_1").await;
    let second = login_ok(&app, "alice_1", PASSWORD).await;
    let bob = app.user("bob_1234").await;
    logout(&app, &alice.username, &alice.token)
        .await
        .assert_success(StatusCode::OK);
    assert_token_invalid(&app, &alice.token).await;
    assert_token_valid(&app, &text(&second, "token")).await;
    assert_token_valid(&app, &bob.token).await;
    // The other session can still rotate.
    refresh(&app, &text(&second, "reflash_key"))
        .await
        .assert_success(StatusCode::CREATED);
}

#[every_backend]
async fn logout_deletes_all_of_the_users_ring_and_message_push_tokens(app: TestApp) {
    let alice = app.user("alice_1").await;
    let alice_other_phone = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    let bob = app.user("bob_1234").await;
    for base in FAMILIES {
        for n in [1, 2] {
            app.post(base, &alice.token, registration(n))
                .await
                .assert_success(StatusCode::CREATED);
        }
        app.put(&format!("{base}/9"), &alice_other_phone, registration(3))
            .await
            .assert_success(StatusCode::CREATED);
        for n in [11, 12] {
            app.post(base, &bob.token, registration(n))
                .await
                .assert_success(StatusCode::CREATED);
        }
        assert_eq!(
            app.get(base, &alice_other_phone)
                .await
                .body
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }
    let mut bob_rows = Vec::new();
    for base in FAMILIES {
        bob_rows.push(app.get(base, &bob.token).await.body);
    }
    logout(&app, &alice.username, &alice.token)
        .await
        .assert_success(StatusCode::OK);
    for (i, base) in FAMILIES.into_iter().enumerate() {
        let reply = app.get(base, &alice_other_phone).await;
        assert_listed(&reply);
        assert_eq!(reply.body, json!([]), "{base}");
        let reply = app.get(base, &bob.token).await;
        assert_eq!(reply.body, bob_rows[i], "{base}: bob's rows are untouched");
        assert_eq!(reply.body.as_array().unwrap().len(), 2, "{base}");
    }
}

#[every_backend]
async fn logout_accepts_the_token_in_a_header_only(app: TestApp) {
    let alice = app.user("alice_1").await;
    let second = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    let third = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    app.post(RING, &third, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app
        .request(
            Method::POST,
            LOGOUT,
            &[("Token", &alice.token)],
            Some(json!({ "username": "alice_1" })),
        )
        .await;
    reply.assert_success(StatusCode::OK);
    assert_token_invalid(&app, &alice.token).await;
    assert_eq!(
        app.get(RING, &third).await.body,
        json!([]),
        "push tokens deleted"
    );
    let bearer = format!("Bearer {second}");
    let reply = app
        .request(
            Method::POST,
            LOGOUT,
            &[("Authorization", &bearer)],
            Some(json!({})),
        )
        .await;
    reply.assert_success(StatusCode::OK);
    assert_token_invalid(&app, &second).await;
    assert_token_valid(&app, &third).await;
}

#[every_backend]
async fn logout_with_another_username_is_400_username_error_and_changes_nothing(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_1234").await;
    app.post(RING, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    app.post(MESSAGE, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    for username in [bob.username.as_str(), "nobody_1"] {
        logout(&app, username, &alice.token)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "username error");
    }
    // A header token with a body naming someone else is refused the same way.
    let reply = app
        .request(
            Method::POST,
            LOGOUT,
            &[("token", &alice.token)],
            Some(json!({ "username": bob.username })),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "username error");
    assert_token_valid(&app, &alice.token).await;
    assert_token_valid(&app, &bob.token).await;
    for base in FAMILIES {
        let reply = app.get(base, &alice.token).await;
        assert_eq!(
            reply.body.as_array().unwrap().len(),
            1,
            "{base}: {}",
            reply.body
        );
    }
}

#[every_backend]
async fn logout_with_username_of_wrong_type_is_username_format_error(app: TestApp) {
    let alice = app.user("alice_1").await;
    let body = json!({ "username": 12345678, "token": alice.token });
    app.post_anonymous(LOGOUT, body)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "username format error");
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn logout_without_any_token_is_401_no_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bodies = [
        json!({ "username": "alice_1" }),
        json!({}),
        json!({ "username": "alice_1", "token": "" }),
        json!({ "username": "alice_1", "token": null }),
    ];
    for body in bodies {
        let reply = app.post_anonymous(LOGOUT, body.clone()).await;
        assert_eq!(reply.body["message"], "no token", "{body}: {}", reply.body);
        reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
    }
    let reply = app.send_raw(Method::POST, LOGOUT, &[], Vec::new()).await;
    reply.assert_error(StatusCode::UNAUTHORIZED, "no token");
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn logout_with_unknown_token_is_401_invalid_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    app.post(RING, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    for token in [
        "garbage".to_owned(),
        "0".repeat(64),
        alice.reflash_key.clone(),
    ] {
        logout(&app, "alice_1", &token)
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    assert_token_valid(&app, &alice.token).await;
    assert_eq!(
        app.get(RING, &alice.token)
            .await
            .body
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

// ---------------------------------------------------------------------------
// Refresh
// ---------------------------------------------------------------------------

#[every_backend]
async fn refresh_answers_like_login_with_a_new_token_and_key(app: TestApp) {
    let alice = app.user("alice_1").await;
    let before = unix_now();
    let reply = refresh(&app, &alice.reflash_key).await;
    let after = unix_now();
    reply.assert_success(StatusCode::CREATED);
    assert_session_issued(&reply.body, alice.id, before, after, 30 * DAY);
    assert_ne!(text(&reply.body, "token"), alice.token);
    assert_ne!(text(&reply.body, "reflash_key"), alice.reflash_key);
    assert_token_valid(&app, &text(&reply.body, "token")).await;
}

#[every_backend]
async fn refresh_retires_the_old_token_and_key(app: TestApp) {
    let alice = app.user("alice_1").await;
    let first = refresh(&app, &alice.reflash_key).await.body;
    assert_token_invalid(&app, &alice.token).await;
    refresh(&app, &alice.reflash_key)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    assert_token_valid(&app, &text(&first, "token")).await;
    // The new key rotates again, once.
    let second = refresh(&app, &text(&first, "reflash_key")).await;
    second.assert_success(StatusCode::CREATED);
    assert_eq!(second.body["id"], alice.id);
    assert_token_invalid(&app, &text(&first, "token")).await;
    assert_token_valid(&app, &text(&second.body, "token")).await;
    refresh(&app, &text(&first, "reflash_key"))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "invalid token");
}

#[every_backend]
async fn refresh_with_unknown_key_is_401_invalid_token(app: TestApp) {
    let alice = app.user("alice_1").await;
    for key in [
        "garbage".to_owned(),
        "".into(),
        "0".repeat(64),
        alice.token.clone(),
    ] {
        let reply = refresh(&app, &key).await;
        assert_eq!(
            reply.body["message"], "invalid token",
            "{key:?}: {}",
            reply.body
        );
        reply.assert_error(StatusCode::UNAUTHORIZED, "invalid token");
    }
    // None of those touched the real session.
    assert_token_valid(&app, &alice.token).await;
    refresh(&app, &alice.reflash_key)
        .await
        .assert_success(StatusCode::CREATED);
}

#[every_backend]
async fn refresh_without_reflash_key_is_undefined_reflash_key(app: TestApp) {
    let alice = app.user("alice_1").await;
    for body in [
        json!({}),
        json!({ "reflash_key": null }),
        json!({ "token": alice.token }),
    ] {
        app.post_anonymous(REFRESH, body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "undefined reflash_key");
    }
    for value in [json!(123), json!([alice.reflash_key])] {
        app.post_anonymous(REFRESH, json!({ "reflash_key": value }))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "reflash_key format error");
    }
    assert_token_valid(&app, &alice.token).await;
}

#[every_backend]
async fn refresh_keeps_other_sessions_and_push_tokens(app: TestApp) {
    let alice = app.user("alice_1").await;
    let other = text(&login_ok(&app, "alice_1", PASSWORD).await, "token");
    for base in FAMILIES {
        app.post(base, &alice.token, registration(1))
            .await
            .assert_success(StatusCode::CREATED);
    }
    let next = refresh(&app, &alice.reflash_key).await;
    next.assert_success(StatusCode::CREATED);
    assert_token_valid(&app, &other).await;
    for base in FAMILIES {
        let reply = app.get(base, &text(&next.body, "token")).await;
        assert_eq!(
            reply.body[0]["push_token"],
            push_token(1),
            "{base}: {}",
            reply.body
        );
    }
}

// ---------------------------------------------------------------------------
// Errors and persistence
// ---------------------------------------------------------------------------

#[every_backend]
async fn account_errors_carry_only_message_and_field(app: TestApp) {
    let alice = app.user("alice_1").await;
    let replies = [
        (sign_up(&app, json!({})).await, Some("username")),
        (
            sign_up(&app, sign_up_body("alice_1")).await,
            Some("username"),
        ),
        (
            sign_up(&app, with(sign_up_body("bob_1234"), "apikey", json!("x"))).await,
            Some("apikey"),
        ),
        (app.login("alice_1", "wrong_pass1").await, None),
        (refresh(&app, "garbage").await, None),
        (app.post_anonymous(LOGOUT, json!({})).await, None),
        (
            logout(&app, "bob_1234", &alice.token).await,
            Some("username"),
        ),
    ];
    for (reply, field) in replies {
        let object = reply.body.as_object().expect("an object");
        assert!(object["message"].is_string(), "{}", reply.body);
        assert!(
            object.keys().all(|k| k == "message" || k == "field"),
            "extra keys: {}",
            reply.body
        );
        if let Some(value) = object.get("field") {
            assert_eq!(Some(value.as_str().unwrap()), field, "{}", reply.body);
        }
    }
}

#[every_backend]
async fn accounts_and_sessions_survive_a_restart(app: TestApp) {
    let id = sign_up(&app, full_sign_up_body("alice_1", 3)).await.body["id"].clone();
    let first = login_ok(&app, "alice_1", PASSWORD).await;
    let token = text(&first, "token");
    let second = login_ok(&app, "alice_1", PASSWORD).await;
    app.post(RING, &token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);

    let app = app.restart().await;

    let reply = app.get(RING, &token).await;
    assert_listed(&reply);
    assert_eq!(reply.body[0]["push_token"], push_token(1));
    assert_eq!(reply.body[0]["id"], id);
    assert_eq!(login_ok(&app, "alice_1", PASSWORD).await["id"], id);
    assert_eq!(
        login_ok(&app, "user3@example.com", PASSWORD).await["id"],
        id
    );
    let rotated = refresh(&app, &text(&second, "reflash_key")).await;
    rotated.assert_success(StatusCode::CREATED);
    assert_token_valid(&app, &text(&rotated.body, "token")).await;
    sign_up(&app, sign_up_body("alice_1"))
        .await
        .assert_error(StatusCode::CONFLICT, "username exist");
    logout(&app, "alice_1", &token)
        .await
        .assert_success(StatusCode::OK);
    assert_token_invalid(&app, &token).await;
}

#[every_backend]
async fn logout_with_a_header_token_and_no_body_is_success(app: TestApp) {
    let alice = app.user("alice_1").await;
    app.post(MESSAGE, &alice.token, registration(1))
        .await
        .assert_success(StatusCode::CREATED);
    let reply = app
        .request(Method::POST, LOGOUT, &[("Token", &alice.token)], None)
        .await;
    reply.assert_success(StatusCode::OK);
    assert_token_invalid(&app, &alice.token).await;
    let again = app.login("alice_1", PASSWORD).await;
    let token = text(&again.body, "token");
    assert_eq!(app.get(MESSAGE, &token).await.body, json!([]));
}

#[every_backend]
async fn logout_accepts_the_email_or_phone_the_user_logs_in_with(app: TestApp) {
    let body = with(
        with(sign_up_body("alice_1"), "email", json!("alice@example.com")),
        "phone",
        json!("+8613800000000"),
    );
    sign_up(&app, body)
        .await
        .assert_success(StatusCode::CREATED);
    app.sign_up("bob_2222").await;
    for name in ["alice@example.com", "+8613800000000"] {
        let token = text(&login_ok(&app, name, PASSWORD).await, "token");
        let reply = app
            .post_anonymous(LOGOUT, json!({ "username": "bob_2222", "token": token }))
            .await;
        reply.assert_error(StatusCode::BAD_REQUEST, "username error");
        let reply = app
            .post_anonymous(LOGOUT, json!({ "username": name, "token": token }))
            .await;
        reply.assert_success(StatusCode::OK);
        assert_token_invalid(&app, &token).await;
    }
}

#[every_backend]
async fn login_with_a_nul_in_the_username_is_401_not_a_database_error(app: TestApp) {
    app.sign_up("alice_1").await;
    for name in ["alice_1\u{0}", "\u{0}", "a\u{0}@x"] {
        let reply = app.login(name, PASSWORD).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "username or password error");
    }
}
