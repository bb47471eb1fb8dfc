//! Both push-token families: listing, registration, update, delete, the
//! one-token-one-row rule and isolation between users.

use axum::http::StatusCode;

use crate::common::{push_token, registration, TestApp, FAMILIES};
use crate::on_every_backend;

async fn post_creates_row_at_serial_one_with_defaults(app: TestApp) {
    let user = app.user("alice_1").await;
    for base in FAMILIES {
        let reply = app.post(base, &user.token, registration(1)).await;
        reply.assert_success(StatusCode::CREATED);
        assert_eq!(reply.body["serial"], 1);
        assert_eq!(reply.body["id"], user.id);
        assert_eq!(reply.body["push_token"], push_token(1));
        assert_eq!(reply.body["dev"], 0);
        assert_eq!(reply.body["bundleid"], "com.lancens.wxdoorbell");
        for field in ["os", "os_token", "push_platform", "phone_model"] {
            assert_eq!(reply.body[field], "", "{field}");
        }
    }
}

on_every_backend!(post_creates_row_at_serial_one_with_defaults);
