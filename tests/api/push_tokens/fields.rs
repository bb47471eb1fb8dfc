//! Each field of a push-token body: the values refused (with the field's
//! own error) and the values stored as sent.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::support::api::{push_token, registration, with, FAMILIES};
use crate::support::push_tokens::{expect_accepted, held, Field, VENDOR_PHONE_MODEL};
use crate::support::{every_backend, TestApp};

#[every_backend]
async fn push_token_must_be_exactly_64_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    let push_token_field = Field::new(&app, &user.token, "push_token");
    let bad = [0usize, 1, 32, 63, 65, 128, 200].map(|len| "a".repeat(len));
    push_token_field
        .refused(StatusCode::BAD_REQUEST, "push_token length error", bad)
        .await;
    // 64 characters, hex or not (the vendor's own socket token).
    let good = [push_token(1), "A".repeat(64), "!~".repeat(32)];
    push_token_field.stored_as_sent(good).await;
}

#[every_backend]
async fn push_token_must_be_printable_ascii_without_spaces(app: TestApp) {
    let user = app.user("alice_1").await;
    let at_64 = |c: &str| format!("{}{c}", "a".repeat(63));
    let bad = [
        at_64(" "),
        format!(" {}", "a".repeat(63)),
        at_64("\t"),
        at_64("\n"),
        at_64("\u{7f}"),
        at_64("\u{0}"),
        at_64("é"),
        at_64("钉"),
        "ａ".repeat(64),
    ];
    for token in &bad {
        assert_eq!(token.chars().count(), 64, "{token:?}");
    }
    Field::new(&app, &user.token, "push_token")
        .refused(StatusCode::BAD_REQUEST, "push_token error", bad)
        .await;
}

#[every_backend]
async fn language_must_be_2_to_11_word_or_dash_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    let language = Field::new(&app, &user.token, "language");
    let bad = ["", "e", "abcdefghijkl", "zh-Hans-CN-x"];
    language
        .refused(StatusCode::BAD_REQUEST, "language length error", bad)
        .await;
    let bad = ["en us", "en.US", "en/US", "中文", "ен", "en\n", "e!"];
    language
        .refused(StatusCode::BAD_REQUEST, "language error", bad)
        .await;
    let good = ["zh", "en", "en_US", "zh-Hans", "abcdefghijk", "12", "A_-z9"];
    language.stored_as_sent(good).await;
}

#[every_backend]
async fn dev_must_be_the_integer_0_or_1(app: TestApp) {
    let user = app.user("alice_1").await;
    let dev = Field::new(&app, &user.token, "dev");
    let bad = [json!(2), json!(-1), json!(100), json!(i64::MAX)];
    dev.refused(StatusCode::BAD_REQUEST, "dev error", bad).await;
    let bad = [
        json!("0"),
        json!("1"),
        json!(0.5),
        json!(1.5),
        json!(true),
        json!([0]),
        json!({"dev": 1}),
    ];
    dev.refused(StatusCode::BAD_REQUEST, "dev format error", bad)
        .await;
    dev.stored_as_sent([1, 0]).await;
}

#[every_backend]
async fn bundleid_must_be_1_to_155_of_its_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    let bundleid = Field::new(&app, &user.token, "bundleid");
    let bad = [String::new(), "a".repeat(156), "a".repeat(300)];
    bundleid
        .refused(StatusCode::BAD_REQUEST, "bundleid length error", bad)
        .await;
    let bad = [
        "com lancens",
        "com/lancens",
        "com.lancens!",
        "com.é",
        "com\tx",
        "钉钉",
    ];
    bundleid
        .refused(StatusCode::BAD_REQUEST, "bundleid error", bad)
        .await;
    let good = [
        "a".to_owned(),
        "com.lancens.wxdoorbell".to_owned(),
        "Com.Example-app_2".to_owned(),
        "b".repeat(155),
    ];
    bundleid.stored_as_sent(good).await;
}

#[every_backend]
async fn os_is_at_most_32_characters_without_control_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    let os = Field::new(&app, &user.token, "os");
    let bad = ["a".repeat(33), "x".repeat(100)];
    os.refused(StatusCode::BAD_REQUEST, "os length error", bad)
        .await;
    let bad = ["And\nroid", "\t", "Android\u{0}", "x\u{7f}", "x\u{85}"];
    os.refused(StatusCode::BAD_REQUEST, "os error", bad).await;
    let good = [
        "ANDROID".to_owned(),
        "Huawei".to_owned(),
        "iOS 17.2".to_owned(),
        "华为".repeat(16),
        "o".repeat(32),
        String::new(),
    ];
    os.stored_as_sent(good).await;
}

#[every_backend]
async fn os_token_is_at_most_4096_printable_ascii_without_spaces(app: TestApp) {
    let user = app.user("alice_1").await;
    let os_token = Field::new(&app, &user.token, "os_token");
    let bad = ["a".repeat(4097), "a".repeat(5000)];
    os_token
        .refused(StatusCode::BAD_REQUEST, "os_token length error", bad)
        .await;
    let bad = ["abc def", " abc", "abc\n", "é", "abc\u{7f}", "钉钉"];
    os_token
        .refused(StatusCode::BAD_REQUEST, "os_token error", bad)
        .await;
    // An FCM-like token of 350 characters, and the limits.
    let fcm = format!("cXbDq0Z1RkS:APA91b{}", "Hk-_7xQ9".repeat(42))
        .chars()
        .take(350)
        .collect::<String>();
    assert_eq!(fcm.len(), 350);
    let good = [fcm, "t".repeat(4096), String::new(), "!~:/_-.".to_owned()];
    os_token.stored_as_sent(good).await;
}

#[every_backend]
async fn push_platform_is_at_most_32_word_or_dash_characters_kept_as_sent(app: TestApp) {
    let user = app.user("alice_1").await;
    let push_platform = Field::new(&app, &user.token, "push_platform");
    let bad = ["a".repeat(33), "F".repeat(64)];
    push_platform
        .refused(StatusCode::BAD_REQUEST, "push_platform length error", bad)
        .await;
    let bad = ["FC M", "FCM.", "huawei/hms", "华为", "FCM\n"];
    push_platform
        .refused(StatusCode::BAD_REQUEST, "push_platform error", bad)
        .await;
    let good = [
        "FCM".to_owned(),
        "HUAWEI".to_owned(),
        "XIAOMI".to_owned(),
        "OPPO".to_owned(),
        "android".to_owned(),
        "Vivo_push-2".to_owned(),
        "p".repeat(32),
        String::new(),
    ];
    push_platform.stored_as_sent(good).await;
}

#[every_backend]
async fn phone_model_is_at_most_128_characters_without_control_characters(app: TestApp) {
    let user = app.user("alice_1").await;
    let phone_model = Field::new(&app, &user.token, "phone_model");
    let bad = ["a".repeat(129), "钉".repeat(129)];
    phone_model
        .refused(StatusCode::BAD_REQUEST, "phone_model length error", bad)
        .await;
    let bad = ["xiaomi\n6", "\u{1}", "model\u{7f}", "a\rb"];
    phone_model
        .refused(StatusCode::BAD_REQUEST, "phone_model error", bad)
        .await;
    // Non-ASCII is fine, and the limit counts characters, not bytes.
    let good = [
        "xiaomi6".to_owned(),
        VENDOR_PHONE_MODEL.to_owned(),
        "钉".repeat(128),
        "m".repeat(128),
        "Pixel 8 Pro (😀)".to_owned(),
        String::new(),
    ];
    phone_model.stored_as_sent(good).await;
}

#[every_backend]
async fn id_may_be_absent_zero_or_the_callers_own_and_nothing_else(app: TestApp) {
    let alice = app.user("alice_1").await;
    let bob = app.user("bob_22").await;
    let id = Field::new(&app, &alice.token, "id");
    let bad = [bob.id, alice.id + 1000, -1, i64::MAX];
    id.refused(StatusCode::FORBIDDEN, "id error", bad).await;
    let bad = [
        json!("1"),
        json!(alice.id.to_string()),
        json!(1.5),
        json!(true),
    ];
    id.refused(StatusCode::BAD_REQUEST, "id format error", bad)
        .await;
    for good in [json!(0), json!(alice.id), Value::Null] {
        let stored = expect_accepted(&app, &alice.token, &with(registration(1), "id", good)).await;
        for row in stored {
            assert_eq!(row["id"], alice.id, "the row is always the caller's");
        }
    }
    for base in FAMILIES {
        assert_eq!(held(&app, base, &bob.token).await, vec![]);
    }
}
