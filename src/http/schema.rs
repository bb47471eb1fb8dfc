//! The OpenAPI document: the answers of the API (each one the type its
//! handler returns), security schemes, and the shared error responses. The
//! request bodies, with every field rule, are the types of `crate::model`
//! that the handlers read. Handlers carry their own `#[utoipa::path]`; the
//! router is built from them, so a route cannot exist without being in the
//! document.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::store::PushTokenRow;

/// The `message` of every answer that is not an error or a list (vendor:
/// clients test `message == "success"`).
const SUCCESS: &str = "success";

/// A vendor error: `{"message": "<vendor error string>"}`, plus the
/// offending field where one is at fault.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({ "message": "push_token length error", "field": "push_token" }))]
pub struct ErrorBody {
    /// The vendor error string: `undefined XXX`, `XXX length error`,
    /// `XXX format error`, `XXX error`, `paramer error`, `no token`,
    /// `invalid token`, `username or password error`, `XXX exist`,
    /// `no data error`, `not found`, `method not allowed`, `body too large`
    /// or `10001`.
    pub message: String,
    /// The request field at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub field: Option<&'static str>,
}

/// `{"message": "success"}`.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({ "message": "success" }))]
pub struct Success {
    #[schema(value_type = String, pattern = "^success$")]
    pub message: &'static str,
}

impl Default for Success {
    fn default() -> Self {
        Success { message: SUCCESS }
    }
}

#[derive(ToSchema, Serialize)]
#[schema(example = json!({ "message": "success", "id": 1 }))]
pub struct SignUpResponse {
    #[schema(value_type = String, pattern = "^success$")]
    pub message: &'static str,
    /// The new user's id.
    pub id: i64,
}

impl SignUpResponse {
    pub const fn new(id: i64) -> Self {
        SignUpResponse {
            message: SUCCESS,
            id,
        }
    }
}

/// A new session: the vendor's five keys at the top level.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({
    "message": "success", "id": 1,
    "token": "9f2c3a41d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80",
    "reflash_key": "41ab2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9",
    "time": 1798588477, "logout_status": 0
}))]
pub struct SessionResponse {
    #[schema(value_type = String, pattern = "^success$")]
    pub message: &'static str,
    /// The user's id.
    pub id: i64,
    /// The session token, for the `token` header.
    pub token: String,
    /// The refresh key, for `POST /v1/api/user/refresh`.
    pub reflash_key: String,
    /// When the session expires, in unix seconds.
    pub time: i64,
    /// Always 0.
    #[schema(minimum = 0, maximum = 0)]
    pub logout_status: i64,
}

impl SessionResponse {
    /// The answer for a new session of `id` that expires at `time`.
    pub fn new(id: i64, token: String, reflash_key: String, time: i64) -> Self {
        SessionResponse {
            message: SUCCESS,
            id,
            token,
            reflash_key,
            time,
            logout_status: 0,
        }
    }
}

/// A stored push token after a write, with `"message": "success"`.
#[derive(ToSchema, Serialize)]
pub struct PushTokenResponse {
    #[schema(value_type = String, pattern = "^success$")]
    pub message: &'static str,
    #[serde(flatten)]
    pub record: PushTokenRow,
}

impl PushTokenResponse {
    pub const fn new(record: PushTokenRow) -> Self {
        PushTokenResponse {
            message: SUCCESS,
            record,
        }
    }
}

#[derive(ToSchema, Serialize)]
#[schema(example = json!({ "message": "success", "deleted": 2 }))]
pub struct DeletedResponse {
    #[schema(value_type = String, pattern = "^success$")]
    pub message: &'static str,
    /// How many rows were deleted.
    #[schema(value_type = i64, minimum = 0)]
    pub deleted: u64,
}

impl DeletedResponse {
    pub const fn new(deleted: u64) -> Self {
        DeletedResponse {
            message: SUCCESS,
            deleted,
        }
    }
}

/// The error responses, by status. (503 covers `10001` and `server busy`.)
#[derive(ToResponse)]
#[response(description = "Invalid request: a field, the serial or the body (see `message`)")]
pub struct BadRequest(#[allow(dead_code)] ErrorBody);

#[derive(ToResponse)]
#[response(
    description = "No session token (`no token`), or an unknown, expired or revoked one (`invalid token`)"
)]
pub struct Unauthorized(#[allow(dead_code)] ErrorBody);

#[derive(ToResponse)]
#[response(
    description = "The request took longer than the request timeout, most often a body sent too slowly (`request timeout`)"
)]
pub struct RequestTimeout(#[allow(dead_code)] ErrorBody);

#[derive(ToResponse)]
#[response(description = "Body larger than the limit (`body too large`)")]
pub struct PayloadTooLarge(#[allow(dead_code)] ErrorBody);

#[derive(ToResponse)]
#[response(
    description = "Rate limited (`too many requests`): too many failed logins for the username, or too many sign-up, login and refresh requests from the address",
    headers(("Retry-After" = u64, description = "Seconds to wait"))
)]
pub struct TooManyRequests(#[allow(dead_code)] ErrorBody);

#[derive(ToResponse)]
#[response(
    description = "The database failed (`10001`), or the server is at its in-flight cap (`server busy`)"
)]
pub struct Unavailable(#[allow(dead_code)] ErrorBody);

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "token",
                "The session token from login, in a header named `token` (any case).",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The session token from login, as `Authorization: Bearer <token>`.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document's frame; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pushtoken",
        description = "Push-token API of the DingDing Smart video-doorbell app: accounts and sessions, ring tokens (doorbell calls) and message tokens (event notifications).",
        license(name = "MIT")
    ),
    servers((url = "/", description = "This server")),
    modifiers(&SecuritySchemes),
    components(
        schemas(ErrorBody, Success),
        responses(BadRequest, Unauthorized, RequestTimeout, PayloadTooLarge, TooManyRequests, Unavailable)
    ),
    tags(
        (name = "accounts", description = "Sign-up, login, logout and session refresh"),
        (name = "ring tokens", description = "Push tokens for doorbell calls"),
        (name = "message tokens", description = "Push tokens for event notifications"),
        (name = "operations", description = "Health and the API description")
    )
)]
pub struct ApiDoc;
