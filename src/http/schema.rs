//! The OpenAPI document: request and response schemas with every field rule
//! of the API, security schemes, and the shared error responses. Handlers
//! carry their own `#[utoipa::path]`; the router is built from them, so a
//! route cannot exist without being in the document.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi as Document;
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

use crate::store::PushTokenRow;

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
    pub field: Option<String>,
}

/// `{"message": "success"}`.
#[derive(ToSchema, Serialize)]
#[schema(example = json!({ "message": "success" }))]
pub struct Success {
    #[schema(pattern = "^success$")]
    pub message: String,
}

/// Sign-up. Fields are checked in this order; the first failure is reported.
#[derive(ToSchema)]
#[schema(example = json!({ "username": "alice_1", "password": "correct_horse1", "apikey": "my-registration-key" }))]
#[allow(dead_code)]
pub struct SignUpRequest {
    /// 6–32 characters of `[A-Za-z0-9_]`, not all digits.
    #[schema(
        min_length = 6,
        max_length = 32,
        pattern = "^[A-Za-z0-9_]*[A-Za-z_][A-Za-z0-9_]*$"
    )]
    pub username: String,
    /// 8–16 characters of letters, digits and `_!@#$%^&*()+-=`.
    #[schema(
        min_length = 8,
        max_length = 16,
        pattern = "^[A-Za-z0-9_!@#$%^&*()+=-]*$"
    )]
    pub password: String,
    /// The server's registration key (`PUSHTOKEN_API_KEY`); a wrong key, or
    /// none configured, is 403 `apikey error`.
    pub apikey: String,
    /// At most 40 characters, containing `@`.
    #[schema(
        max_length = 40,
        pattern = "^[^\\x00-\\x1f\\x7f]*@[^\\x00-\\x1f\\x7f]*$"
    )]
    pub email: Option<String>,
    /// 6–20 digits, optionally after a `+`.
    #[schema(pattern = "^\\+?[0-9]{6,20}$")]
    pub phone: Option<String>,
    /// 1–32 characters, no control characters.
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub realm: Option<String>,
    /// A verification code of 6 digits (accepted, not checked).
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: Option<String>,
}

#[derive(ToSchema, Serialize)]
#[schema(example = json!({ "message": "success", "id": 1 }))]
pub struct SignUpResponse {
    #[schema(pattern = "^success$")]
    pub message: String,
    /// The new user's id.
    pub id: i64,
}

/// Login with the username, email or phone of the account.
#[derive(ToSchema)]
#[schema(example = json!({ "username": "alice_1", "password": "correct_horse1" }))]
#[allow(dead_code)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
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
    #[schema(pattern = "^success$")]
    pub message: String,
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

/// Logout. The session token travels in the body (vendor) or a header.
#[derive(ToSchema)]
#[schema(example = json!({ "username": "alice_1", "token": "9f2c3a41d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80" }))]
#[allow(dead_code)]
pub struct LogoutRequest {
    /// The session's user, by username, email or phone; another user is
    /// 400 `username error`.
    pub username: Option<String>,
    /// The session token to revoke (else the one of the header).
    pub token: Option<String>,
}

#[derive(ToSchema)]
#[schema(example = json!({ "reflash_key": "41ab2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9" }))]
#[allow(dead_code)]
pub struct RefreshRequest {
    /// The refresh key of a live session; it can be used once.
    pub reflash_key: String,
}

/// A push-token registration (ring or message family).
#[derive(ToSchema)]
#[schema(example = json!({
    "push_token": "0d5c2a6b1f0e4c3d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f",
    "language": "zh", "dev": 0, "bundleid": "com.lancens.wxdoorbell",
    "os": "ANDROID", "os_token": "", "push_platform": "FCM",
    "phone_model": "phone:Xiaomi_Mi_10/App:钉钉智能_1.0.0/Android_11"
}))]
#[allow(dead_code)]
pub struct PushTokenRequest {
    /// Exactly 64 printable ASCII characters without spaces.
    #[schema(min_length = 64, max_length = 64, pattern = "^[!-~]*$")]
    pub push_token: String,
    /// 2–11 characters of `[A-Za-z0-9_-]`.
    #[schema(min_length = 2, max_length = 11, pattern = "^[A-Za-z0-9_-]*$")]
    pub language: String,
    /// 0 = release (APNs production), 1 = development (sandbox); default 0.
    #[schema(minimum = 0, maximum = 1)]
    pub dev: Option<i64>,
    /// 1–155 characters of `[A-Za-z0-9._-]`; default: the `bundleid`
    /// header, else the configured bundle id.
    #[schema(min_length = 1, max_length = 155, pattern = "^[A-Za-z0-9._-]*$")]
    pub bundleid: Option<String>,
    /// Phone maker or system, at most 32 characters, no control characters.
    #[schema(max_length = 32, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub os: Option<String>,
    /// The maker's own push token: at most 4096 printable ASCII characters
    /// without spaces.
    #[schema(max_length = 4096, pattern = "^[!-~]*$")]
    pub os_token: Option<String>,
    /// The Android push platform (`FCM`, `HUAWEI`, …): at most 32 characters
    /// of `[A-Za-z0-9_-]`.
    #[schema(max_length = 32, pattern = "^[A-Za-z0-9_-]*$")]
    pub push_platform: Option<String>,
    /// At most 128 characters, no control characters.
    #[schema(max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub phone_model: Option<String>,
    /// The caller's user id; 0 or absent is ignored, another user's id is
    /// 403 `id error`.
    pub id: Option<i64>,
}

/// A stored push token after a write, with `"message": "success"`.
#[derive(ToSchema, Serialize)]
#[allow(dead_code)]
pub struct PushTokenResponse {
    #[schema(pattern = "^success$")]
    pub message: String,
    #[serde(flatten)]
    pub record: PushTokenRow,
}

#[derive(ToSchema, Serialize)]
#[schema(example = json!({ "message": "success", "deleted": 2 }))]
pub struct DeletedResponse {
    #[schema(pattern = "^success$")]
    pub message: String,
    /// How many rows were deleted.
    #[schema(minimum = 0)]
    pub deleted: i64,
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
        (name = "delivery", description = "Events sent to the push socket's connections, and their history"),
        (name = "operations", description = "Health and the API description")
    )
)]
pub struct ApiDoc;
