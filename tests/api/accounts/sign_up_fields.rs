//! Sign-up: each field's rule, missing, null and mistyped fields, and the
//! order in which the fields are checked.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::accounts::{assert_sign_up_refuses, login_ok, sign_up};
use crate::support::api::{full_sign_up_body, sign_up_body, with, without, API_KEY, PASSWORD};
use crate::support::{every_backend, TestApp};

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
    let bad = [
        "".to_owned(),
        "a".into(),
        "abcde".into(),
        "a".repeat(33),
        "a".repeat(100),
    ];
    assert_sign_up_refuses(&app, "username", bad, "username length error").await;
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
    assert_sign_up_refuses(&app, "username", bad, "username error").await;
}

#[every_backend]
async fn sign_up_with_password_out_of_8_to_16_chars_is_password_length_error(app: TestApp) {
    let bad = [
        "".to_owned(),
        "short".into(),
        "1234567".into(),
        "a".repeat(17),
        "a".repeat(64),
    ];
    assert_sign_up_refuses(&app, "password", bad, "password length error").await;
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
    assert_sign_up_refuses(&app, "password", bad, "password error").await;
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
async fn sign_up_with_email_over_40_chars_is_email_length_error(app: TestApp) {
    let bad = [
        format!("{}@example.com", "e".repeat(29)),
        format!("{}@example.com", "e".repeat(100)),
    ];
    assert_sign_up_refuses(&app, "email", bad, "email length error").await;
}

#[every_backend]
async fn sign_up_with_email_without_at_sign_is_email_error(app: TestApp) {
    let bad = ["alice.example.com", "", "alice"];
    assert_sign_up_refuses(&app, "email", bad, "email error").await;
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
    assert_sign_up_refuses(&app, "phone", bad, "phone error").await;
}

#[every_backend]
async fn sign_up_with_realm_out_of_1_to_32_chars_is_realm_length_error(app: TestApp) {
    let bad = ["".to_owned(), "r".repeat(33), "r".repeat(100)];
    assert_sign_up_refuses(&app, "realm", bad, "realm length error").await;
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
    assert_sign_up_refuses(&app, "code", bad, "code error").await;
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
