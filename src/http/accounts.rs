//! Sign-up, login, logout, session refresh and password change.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{Error, Result};
use crate::http::extract::{authenticate, session_token, AuthUser, JsonObject, JsonObjectOrEmpty};
use crate::http::limits::{Account, Attempt, AuthRate};
use crate::http::schema::{
    BadRequest, ErrorBody, PayloadTooLarge, RequestTimeout, SessionResponse, SignUpResponse,
    Success, TooManyRequests, Unauthorized, Unavailable,
};
use crate::http::AppState;
use crate::model::{
    Login, LoginRequest, LogoutRequest, PasswordChange, PasswordChangeRequest, RefreshRequest,
    RegistrationKey, SignUp, SignUpRequest,
};
use crate::secrets::{new_secret, secret_hash, Admitted};
use crate::store::{NewSession, NewUser, Rotation};
use crate::unix_now;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sign_up))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(refresh))
        .routes(routes!(change_password))
}

/// A place to hash a password, or 503 `server busy` at once.
fn admit(state: &AppState) -> Result<Admitted> {
    state.passwords.admit().ok_or_else(|| {
        tracing::debug!("password hashing is full; a request is refused");
        Error::Busy
    })
}

/// A password check's attempt, counted against `account` (429 when it has
/// used its attempts up), and its place to hash (503, the attempt then not
/// counted).
fn attempt_to_hash<'a>(
    state: &'a AppState,
    account: Account<'_>,
) -> Result<(Attempt<'a>, Admitted)> {
    let attempt = state.limits.attempt(account)?;
    match admit(state) {
        Ok(hashing) => Ok((attempt, hashing)),
        Err(busy) => {
            attempt.withdrawn();
            Err(busy)
        }
    }
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
    let password_hash = admit(&state)?
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
        (status = 503, description = "Too many logins wait for a password hash (`server busy`), or the database failed (`10001`)", body = ErrorBody),
    )
)]
async fn login(
    _: AuthRate,
    State(state): State<AppState>,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<SessionResponse>)> {
    let Login { username, password } = Login::parse(&body)?;
    let account = state.store.find_credentials(&username).await?;
    let (user_id, hash) = match account {
        Some(c) => (Some(c.id), Some(c.password_hash)),
        None => (None, None),
    };
    let account = match user_id {
        Some(id) => Account::Id(id),
        None => Account::Unknown(&username),
    };
    let (attempt, hashing) = attempt_to_hash(&state, account)?;
    let verified = hashing
        .verify(password, hash)
        .await
        .map_err(Error::Internal)?;
    drop(hashing);
    let Some(user_id) = user_id.filter(|_| verified) else {
        tracing::info!("login refused");
        return Err(Error::BadCredentials);
    };
    attempt.succeeded();
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
    let max_age = state.config.session_max_age.as_secs() as i64;
    let rotated = state
        .store
        .rotate_session(&secret_hash(&key), unix_now(), next, max_age)
        .await?;
    match rotated {
        Rotation::Rotated(next) => {
            tracing::info!(user_id = next.user_id, "session refreshed");
            Ok((
                StatusCode::CREATED,
                Json(SessionResponse {
                    id: next.user_id,
                    time: next.expires_at,
                    ..issued
                }),
            ))
        }
        Rotation::Reused { user_id, revoked } => {
            tracing::warn!(
                user_id,
                revoked,
                "a refresh key was used twice: the sessions of its login are revoked"
            );
            Err(Error::InvalidToken)
        }
        Rotation::Unknown => {
            tracing::debug!("refresh with an unknown or expired key");
            Err(Error::InvalidToken)
        }
    }
}

#[utoipa::path(
    put, path = "/v1/api/user/password", tag = "accounts", operation_id = "change_password",
    summary = "Change the password: every other session of the user is revoked",
    security(("token" = []), ("bearer" = [])),
    request_body = PasswordChangeRequest,
    responses(
        (status = 200, description = "Changed", body = Success),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = TooManyRequests),
        (status = 503, description = "Too many requests wait for a password hash (`server busy`), or the database failed (`10001`)", body = ErrorBody),
    )
)]
async fn change_password(
    State(state): State<AppState>,
    AuthUser(session): AuthUser,
    JsonObject(body): JsonObject,
) -> Result<Json<Success>> {
    let PasswordChange {
        password,
        oldpassword,
    } = PasswordChange::parse(&body)?;
    let user_id = session.user_id;
    let (attempt, hashing) = attempt_to_hash(&state, Account::Id(user_id))?;
    let current = state.store.password_hash(user_id).await?;
    let verified = hashing
        .verify(oldpassword, current)
        .await
        .map_err(Error::Internal)?;
    if !verified {
        tracing::info!(user_id, "password change refused: wrong current password");
        return Err(Error::Invalid("oldpassword"));
    }
    attempt.succeeded();
    let password_hash = hashing.hash(password).await.map_err(Error::Internal)?;
    drop(hashing);
    let revoked = state
        .store
        .change_password(user_id, &password_hash, Some(session.session_id))
        .await?;
    tracing::info!(
        user_id,
        revoked,
        "password changed; the user's other sessions are revoked"
    );
    Ok(Json(Success::default()))
}

/// A new login's id: random, so instances need no shared counter.
fn login_id() -> i64 {
    (rand::random::<u64>() >> 1) as i64
}

/// A new session for `user_id`: what to store and what to answer.
fn new_session(state: &AppState, user_id: i64) -> (NewSession, SessionResponse) {
    let now = unix_now();
    let ttl = state.config.session_ttl.as_secs() as i64;
    let token = new_secret();
    let reflash_key = new_secret();
    let max_age = state.config.session_max_age.as_secs() as i64;
    let session = NewSession {
        user_id,
        token_hash: secret_hash(&token),
        refresh_hash: secret_hash(&reflash_key),
        created_at: now,
        expires_at: now + ttl,
        // A refresh key outlives its session by one more lifetime, so an app
        // that was away past expiry can still rotate without the password;
        // never past the login's end.
        refresh_expires_at: (now + 2 * ttl).min(now + max_age),
        // A new login (a refresh keeps its session's).
        login_id: login_id(),
        login_at: now,
    };
    let issued = SessionResponse::new(user_id, token, reflash_key, session.expires_at);
    (session, issued)
}
