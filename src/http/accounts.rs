//! Sign-up, login, logout and session refresh.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Result};
use crate::http::extract::{authenticate, session_token, JsonObject, JsonObjectOrEmpty};
use crate::http::limits::AuthRate;
use crate::http::schema::{
    BadRequest, ErrorBody, PayloadTooLarge, RequestTimeout, SessionResponse, SignUpResponse,
    Success, TooManyRequests, Unauthorized, Unavailable,
};
use crate::http::AppState;
use crate::model::{
    Login, LoginRequest, LogoutRequest, RefreshRequest, RegistrationKey, SignUp, SignUpRequest,
};
use crate::secrets::{new_secret, secret_hash};
use crate::store::{NewSession, NewUser};
use crate::unix_now;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(refresh))
}

#[utoipa::path(
    post, path = "/v1/api/user", tag = "accounts", operation_id = "sign_up",
    summary = "Create an account (needs the server's registration key)",
    request_body = SignUpRequest,
    responses(
        (status = 201, description = "Created", body = SignUpResponse),
        (status = 400, response = BadRequest),
        (status = 403, description = "Wrong registration key, or sign-up disabled (`apikey error`)", body = ErrorBody),
        (status = 409, description = "`username exist`, `email exist` or `phone exist`", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
async fn sign_up(
    _: AuthRate,
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<SignUpResponse>)> {
    let key = RegistrationKey(state.config.api_key.as_deref());
    let body = SignUp::parse(&body, &key)?;
    let password_hash = state
        .passwords
        .hash(body.password)
        .await
        .map_err(Error::Internal)?;
    let user = NewUser {
        username: body.username,
        password_hash,
        email: body.email,
        phone: body.phone,
        realm: body.realm,
    };
    let id = state.store.create_user(user, unix_now()).await?;
    tracing::info!(user_id = id, "account created");
    Ok((StatusCode::CREATED, Json(SignUpResponse::new(id))))
}

#[utoipa::path(
    post, path = "/v1/api/user/login", tag = "accounts", operation_id = "login",
    summary = "Open a session with a username (or email, or phone) and password",
    request_body = LoginRequest,
    responses(
        (status = 201, description = "Logged in", body = SessionResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "`username or password error`", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
async fn login(
    _: AuthRate,
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<SessionResponse>)> {
    let Login { username, password } = Login::parse(&body)?;
    state.limits.check_username(&username)?;
    let account = state.store.find_credentials(&username).await?;
    let (user_id, hash) = match account {
        Some(c) => (Some(c.id), Some(c.password_hash)),
        None => (None, None),
    };
    let verified = state
        .passwords
        .verify(password, hash)
        .await
        .map_err(Error::Internal)?;
    let Some(user_id) = user_id.filter(|_| verified) else {
        tracing::info!("login refused");
        state.limits.login_failed(&username);
        return Err(Error::BadCredentials);
    };
    state.limits.login_succeeded(&username);
    let (session, issued) = new_session(&state, user_id);
    state.store.create_session(session).await?;
    tracing::info!(user_id, "logged in");
    Ok((StatusCode::CREATED, Json(issued)))
}

/// The token comes in the body (vendor) or a header; `username`, when sent,
/// must name the session's user (by username, email or phone, as at login).
#[utoipa::path(
    post, path = "/v1/api/user/logout", tag = "accounts", operation_id = "logout",
    summary = "Revoke a session and delete all of its user's ring and message tokens",
    security((), ("token" = []), ("bearer" = [])),
    request_body(content = Option<LogoutRequest>, description = "The token to revoke and its user; may be empty when the token is in a header"),
    responses(
        (status = 200, description = "Logged out", body = Success),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 503, response = Unavailable),
    )
)]
async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<JsonObjectOrEmpty, Error>,
) -> Result<Json<Success>> {
    // Authentication comes before the body's checks: the token is taken
    // from the body as it is, and the body is checked once the session is
    // known.
    let body = body.map(|JsonObjectOrEmpty(object)| object);
    let body_token = body.as_ref().ok().and_then(LogoutRequest::token_in);
    let Some(token) = body_token.or_else(|| session_token(&headers)) else {
        return Err(Error::NoToken);
    };
    let session = authenticate(&state, token).await?;
    let LogoutRequest { username, .. } = LogoutRequest::parse(&body?)?;
    if let Some(name) = username.filter(|name| *name != session.username) {
        let named = state.store.find_credentials(&name).await?;
        if named.is_none_or(|account| account.id != session.user_id) {
            return Err(Error::Invalid("username"));
        }
    }
    state.store.logout(&session).await?;
    tracing::info!(user_id = session.user_id, "logged out");
    Ok(Json(Success::default()))
}

#[utoipa::path(
    post, path = "/v1/api/user/refresh", tag = "accounts", operation_id = "refresh",
    summary = "Rotate a session: a new token and refresh key; the old pair stops working",
    request_body = RefreshRequest,
    responses(
        (status = 201, description = "Rotated", body = SessionResponse),
        (status = 400, response = BadRequest),
        (status = 401, description = "Unknown, expired or used key (`invalid token`)", body = ErrorBody),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyRequests),
        (status = 503, response = Unavailable),
    )
)]
async fn refresh(
    _: AuthRate,
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<SessionResponse>)> {
    let key = RefreshRequest::parse(&body)?;
    let (next, issued) = new_session(&state, 0);
    let Some(next) = state
        .store
        .rotate_session(&secret_hash(&key), unix_now(), next)
        .await?
    else {
        tracing::debug!("refresh with an unknown, expired or used key");
        return Err(Error::InvalidToken);
    };
    tracing::info!(user_id = next.user_id, "session refreshed");
    Ok((
        StatusCode::CREATED,
        Json(SessionResponse {
            id: next.user_id,
            ..issued
        }),
    ))
}

/// A new session for `user_id`: what to store and what to answer.
fn new_session(state: &AppState, user_id: i64) -> (NewSession, SessionResponse) {
    let now = unix_now();
    let ttl = state.config.session_ttl.as_secs() as i64;
    let token = new_secret();
    let reflash_key = new_secret();
    let session = NewSession {
        user_id,
        token_hash: secret_hash(&token),
        refresh_hash: secret_hash(&reflash_key),
        created_at: now,
        expires_at: now + ttl,
        // A refresh key outlives its session by one more lifetime, so an app
        // that was away past expiry can still rotate without the password.
        refresh_expires_at: now + 2 * ttl,
    };
    let issued = SessionResponse::new(user_id, token, reflash_key, session.expires_at);
    (session, issued)
}
