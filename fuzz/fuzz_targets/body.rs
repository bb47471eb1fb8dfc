//! Arbitrary bytes through the server's body parsing and validation: the
//! JSON reading of `JsonObject` (`serde_json::from_slice` to a `Value`, with
//! the server's `float_roundtrip` feature), then every parser a route runs
//! on the object. None may panic; each either refuses with a client error
//! (4xx) or accepts a body that keeps the documented rules.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pushtoken::error::Error;
use pushtoken::http::extract::parse_serial;
use pushtoken::model::{
    Login, LogoutRequest, Notify, PasswordChange, PushTokenInput, RefreshRequest,
    RegistrationKey, SignUp, MAX_EVENT_BYTES, MAX_TTL,
};
use serde_json::Value;

fn refused(error: Error) {
    assert!(
        error.status().is_client_error(),
        "a body was refused with {}: {error}",
        error.status()
    );
}

fuzz_target!(|data: &[u8]| {
    // The `{serial}` path segment, when the bytes are text.
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(serial) = parse_serial(text) {
            assert!(serial >= 0, "{text:?} parsed as {serial}");
        }
    }

    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(data) else {
        return;
    };

    match PushTokenInput::parse(&map, 1) {
        Ok(input) => {
            assert_eq!(input.push_token.chars().count(), 64);
            assert!(input.push_token.bytes().all(|b| b.is_ascii_graphic()));
            assert!((2..=11).contains(&input.language.chars().count()));
            assert!(input.dev.is_none_or(|dev| dev == 0 || dev == 1));
            if let Some(os) = &input.os {
                assert!(os.chars().count() <= 32 && !os.chars().any(char::is_control));
            }
            if let Some(model) = &input.phone_model {
                assert!(model.chars().count() <= 128 && !model.chars().any(char::is_control));
            }
        }
        Err(error) => refused(error),
    }

    // Whatever key the body sends is taken as the configured one.
    let key = RegistrationKey(map.get("apikey").and_then(Value::as_str));
    match SignUp::parse(&map, &key) {
        Ok(body) => {
            assert!((6..=32).contains(&body.username.chars().count()));
            assert!(!body.username.bytes().all(|b| b.is_ascii_digit()));
            assert!((8..=16).contains(&body.password.chars().count()));
        }
        Err(error) => refused(error),
    }

    // Login, logout and refresh read plain string fields.
    if let Err(error) = Login::parse(&map) {
        refused(error);
    }
    if let Err(error) = LogoutRequest::parse(&map) {
        refused(error);
    }
    if let Err(error) = RefreshRequest::parse(&map) {
        refused(error);
    }

    match PasswordChange::parse(&map) {
        Ok(body) => assert!((8..=16).contains(&body.password.chars().count())),
        Err(error) => refused(error),
    }

    // The user alone, then the whole notify body.
    if let Err(error) = Notify::user(&map) {
        refused(error);
    }
    match Notify::parse(&map) {
        Ok(notify) => {
            assert!((0..=MAX_TTL).contains(&notify.ttl));
            assert!(serde_json::to_string(&notify.event).unwrap().len() <= MAX_EVENT_BYTES);
            for (field, longest) in [("type", 16), ("uid", 64)] {
                let text = notify.event[field].as_str().unwrap();
                assert!((1..=longest).contains(&text.chars().count()));
            }
        }
        Err(error) => refused(error),
    }
});
