//! Request bodies and the rules of their fields.
//!
//! Each body is one struct: read from a JSON object, checked with
//! `validator`, and described in the OpenAPI document by `utoipa`. A field's
//! facts (lengths, characters) are written once, in the constants and
//! functions below, which both the `#[validate]` attributes and the command
//! line read. The `#[schema]` attributes take literals only; the agreement
//! test of `http::schema` proves, rule by rule, that they say the same.
//!
//! The API checks a body's fields in the order it lists them (`Body::FIELDS`)
//! and reports the first failure: for each field, a value of the wrong JSON
//! type, else its first `validator` failure.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use validator::{
    Validate, ValidateArgs, ValidateLength, ValidationError, ValidationErrors, ValidationErrorsKind,
};

use crate::error::{Error, Result};
use crate::store::Family;

// ---------------------------------------------------------------------------
// Field rules
// ---------------------------------------------------------------------------

/// How many characters a string field may hold, counted as `validator` and
/// JSON Schema count them (Unicode scalar values).
#[derive(Clone, Copy, Debug)]
pub struct Length {
    pub min: u64,
    pub max: u64,
}

impl Length {
    const fn at_most(max: u64) -> Self {
        Length { min: 0, max }
    }

    /// Whether `s` has an allowed number of characters.
    pub fn allows(&self, s: &str) -> bool {
        s.validate_length(Some(self.min), Some(self.max), None)
    }
}

pub const USERNAME_LENGTH: Length = Length { min: 6, max: 32 };
pub const PASSWORD_LENGTH: Length = Length { min: 8, max: 16 };
pub const EMAIL_LENGTH: Length = Length::at_most(40);
/// The digits of a phone number, after an optional `+`.
pub const PHONE_DIGITS: Length = Length { min: 6, max: 20 };
pub const REALM_LENGTH: Length = Length { min: 1, max: 32 };
/// The digits of a verification code.
pub const CODE_DIGITS: Length = Length { min: 6, max: 6 };
pub const PUSH_TOKEN_LENGTH: Length = Length { min: 64, max: 64 };
pub const LANGUAGE_LENGTH: Length = Length { min: 2, max: 11 };
pub const BUNDLEID_LENGTH: Length = Length { min: 1, max: 155 };
pub const OS_LENGTH: Length = Length::at_most(32);
pub const OS_TOKEN_LENGTH: Length = Length::at_most(4096);
pub const PUSH_PLATFORM_LENGTH: Length = Length::at_most(32);
pub const PHONE_MODEL_LENGTH: Length = Length::at_most(128);
/// A login name: a username, an email or a phone number.
pub const LOGIN_NAME_LENGTH: Length = Length::at_most(64);

/// `[A-Za-z0-9_]`.
fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Letters, digits and `_!@#$%^&*()+-=`.
fn password_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_!@#$%^&*()+-=".contains(c)
}

/// `[A-Za-z0-9_-]` (language codes, push platforms).
fn word_or_dash_char(c: char) -> bool {
    word_char(c) || c == '-'
}

/// `[A-Za-z0-9._-]`.
fn bundle_char(c: char) -> bool {
    word_or_dash_char(c) || c == '.'
}

/// Printable ASCII without spaces (`!` to `~`).
fn visible_ascii_char(c: char) -> bool {
    c.is_ascii_graphic()
}

/// Anything but a control character (C0, DEL and C1).
fn text_char(c: char) -> bool {
    !c.is_control()
}

fn check(ok: bool) -> std::result::Result<(), ValidationError> {
    if ok {
        Ok(())
    } else {
        Err(ValidationError::new("invalid"))
    }
}

fn valid_username(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.chars().all(word_char) && !s.chars().all(|c| c.is_ascii_digit()))
}

fn valid_password(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.chars().all(password_char))
}

fn valid_email(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.contains('@') && s.chars().all(text_char))
}

fn valid_phone(s: &str) -> std::result::Result<(), ValidationError> {
    check(digits(s.strip_prefix('+').unwrap_or(s), PHONE_DIGITS))
}

fn valid_code(s: &str) -> std::result::Result<(), ValidationError> {
    check(digits(s, CODE_DIGITS))
}

/// `s` is ASCII digits, as many as `count` allows.
fn digits(s: &str, count: Length) -> bool {
    count.allows(s) && s.chars().all(|c| c.is_ascii_digit())
}

fn valid_text(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.chars().all(text_char))
}

fn valid_visible_ascii(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.chars().all(visible_ascii_char))
}

fn valid_word_or_dash(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.chars().all(word_or_dash_char))
}

fn valid_bundle_chars(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.chars().all(bundle_char))
}

/// Whether `s` is a valid bundle id (the `bundleid` field's rule).
pub fn is_bundle_id(s: &str) -> bool {
    BUNDLEID_LENGTH.allows(s) && valid_bundle_chars(s).is_ok()
}

/// A username by the sign-up rule (for accounts made on the command line).
pub fn check_username(s: &str) -> Result<()> {
    check_text("username", s, USERNAME_LENGTH, valid_username)
}

/// A password by the sign-up rule (for accounts made on the command line).
pub fn check_password(s: &str) -> Result<()> {
    check_text("password", s, PASSWORD_LENGTH, valid_password)
}

/// A string field's rule in the order `validator` applies it: the length,
/// then the characters.
fn check_text(
    field: &'static str,
    s: &str,
    length: Length,
    chars: fn(&str) -> std::result::Result<(), ValidationError>,
) -> Result<()> {
    if !length.allows(s) {
        return Err(Error::Length(field));
    }
    chars(s).map_err(|_| Error::Invalid(field))
}

/// What sign-up checks `apikey` against: the configured registration key,
/// if there is one (none: sign-up is disabled).
pub struct RegistrationKey<'a>(pub Option<&'a str>);

fn registration_key(
    key: &str,
    expected: &RegistrationKey<'_>,
) -> std::result::Result<(), ValidationError> {
    check(
        expected
            .0
            .is_some_and(|c| crate::secrets::constant_time_eq(c, key)),
    )
}

/// The user a push-token registration is for: `id`, when sent and not 0,
/// must be theirs.
pub struct Caller(pub i64);

fn callers_id(id: i64, caller: &Caller) -> std::result::Result<(), ValidationError> {
    check(id == 0 || id == caller.0)
}

// ---------------------------------------------------------------------------
// Reading a body
// ---------------------------------------------------------------------------

/// The JSON type a body field must have; `null` counts as absent.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    String,
    /// A number with no fractional part that fits an i64 (`1.0` is the
    /// integer 1, as JSON Schema counts it).
    Integer,
    /// An integer (as [`Kind::Integer`]) or a string: an id or a name.
    IntegerOrString,
    /// Any JSON value: the field's rules judge its type too (a value of
    /// another type is `XXX error`, not `XXX format error`).
    Any,
    /// A JSON object that is a body of its own, read by the function: its
    /// first failing field is reported in this field's place, after this
    /// field's own rules and before the next field.
    Object(fn(&Map<String, Value>) -> Result<()>),
}

impl Kind {
    /// The value as the body's struct reads it, or `None` if it has another
    /// type.
    fn read(self, value: &Value) -> Option<Value> {
        match self {
            Kind::String => value.is_string().then(|| value.clone()),
            Kind::Integer => json_integer(value).map(Value::from),
            Kind::IntegerOrString if value.is_string() => Some(value.clone()),
            Kind::IntegerOrString => json_integer(value).map(Value::from),
            Kind::Object(_) => value.is_object().then(|| value.clone()),
            Kind::Any => Some(value.clone()),
        }
    }
}

/// A body field: its name and JSON type.
pub type Field = (&'static str, Kind);

/// A request body: one struct, read from a JSON object by name, checked
/// with `validator`, described in the OpenAPI document.
pub trait Body: DeserializeOwned {
    /// Every field of the body with its JSON type, in the order the API
    /// lists them: the order in which they are checked.
    const FIELDS: &'static [Field];
}

/// Reads a body from a JSON object and reports its first failing field in
/// the order of `B::FIELDS`: a value of the wrong type is `XXX format
/// error`, else the field's first `validator` error (`undefined XXX`, `XXX
/// length error`, `XXX error`, or 403 `XXX error` for a failed check of
/// who the caller is). Unknown fields are ignored.
pub fn read_body<'v, B>(object: &Map<String, Value>, context: B::Args) -> Result<B>
where
    B: Body + ValidateArgs<'v>,
{
    read_body_through(object, context, None)
}

/// [`read_body`], judging the fields up to `last` (all when `None`): the
/// fields after it are read, not judged.
fn read_body_through<'v, B>(
    object: &Map<String, Value>,
    context: B::Args,
    last: Option<&str>,
) -> Result<B>
where
    B: Body + ValidateArgs<'v>,
{
    let mut typed = Map::new();
    let mut wrong_type = Vec::new();
    for &(name, kind) in B::FIELDS {
        match object.get(name) {
            None | Some(Value::Null) => {}
            Some(value) => match kind.read(value) {
                Some(value) => {
                    typed.insert(name.to_owned(), value);
                }
                None => wrong_type.push(name),
            },
        }
    }
    // The message of a serde error quotes the value: it is not kept.
    let body: B = serde_json::from_value(Value::Object(typed)).map_err(|_| {
        Error::Internal(anyhow::anyhow!(
            "the JSON types of a body's fields disagree with its struct"
        ))
    })?;
    let errors = body
        .validate_with_args(context)
        .err()
        .map(ValidationErrors::into_errors)
        .unwrap_or_default();
    for &(name, kind) in B::FIELDS {
        if wrong_type.contains(&name) {
            return Err(Error::Format(name));
        }
        // A field named by a Rust keyword (`type`) is `r#type` to validator.
        let found = errors
            .get(name)
            .or_else(|| errors.get(format!("r#{name}").as_str()));
        if let Some(ValidationErrorsKind::Field(list)) = found {
            if let Some(first) = list.first() {
                return Err(match first.code.as_ref() {
                    "undefined" => Error::Undefined(name),
                    "length" => Error::Length(name),
                    "forbidden" => Error::Forbidden(name),
                    _ => Error::Invalid(name),
                });
            }
        }
        if let (Kind::Object(read), Some(Value::Object(inner))) = (kind, object.get(name)) {
            read(inner)?;
        }
        if last == Some(name) {
            return Ok(body);
        }
    }
    if errors.is_empty() {
        Ok(body)
    } else {
        let fields: Vec<_> = errors.keys().collect();
        Err(Error::Internal(anyhow::anyhow!(
            "a body failed validation on fields it does not list: {fields:?}"
        )))
    }
}

/// A JSON number with no fractional part that fits an i64.
pub(crate) fn json_integer(value: &Value) -> Option<i64> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    value.as_i64().or_else(|| {
        let f = value.as_f64()?;
        (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
    })
}

/// A field that validation found present, or `undefined XXX`.
fn required<T>(value: Option<T>, name: &'static str) -> Result<T> {
    value.ok_or(Error::Undefined(name))
}

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

/// Sign-up. Fields are checked in this order; the first failure is reported.
#[derive(Deserialize, Validate, ToSchema)]
#[validate(context = "RegistrationKey<'v_a>")]
#[schema(example = json!({ "username": "alice_1", "password": "correct_horse1", "apikey": "my-registration-key" }))]
pub struct SignUpRequest {
    /// 6–32 characters of `[A-Za-z0-9_]`, not all digits.
    #[validate(
        required(code = "undefined"),
        length(min = USERNAME_LENGTH.min, max = USERNAME_LENGTH.max, code = "length"),
        custom(function = "valid_username")
    )]
    #[schema(
        value_type = String,
        required = true,
        min_length = 6,
        max_length = 32,
        pattern = "^[A-Za-z0-9_]*[A-Za-z_][A-Za-z0-9_]*$"
    )]
    pub username: Option<String>,
    /// 8–16 characters of letters, digits and `_!@#$%^&*()+-=`.
    #[validate(
        required(code = "undefined"),
        length(min = PASSWORD_LENGTH.min, max = PASSWORD_LENGTH.max, code = "length"),
        custom(function = "valid_password")
    )]
    #[schema(
        value_type = String,
        required = true,
        min_length = 8,
        max_length = 16,
        pattern = "^[A-Za-z0-9_!@#$%^&*()+=-]*$"
    )]
    pub password: Option<String>,
    /// The server's registration key (`PUSHTOKEN_API_KEY`); a wrong key, or
    /// none configured, is 403 `apikey error`.
    #[validate(
        required(code = "undefined"),
        custom(function = "registration_key", use_context, code = "forbidden")
    )]
    #[schema(value_type = String, required = true)]
    pub apikey: Option<String>,
    /// At most 40 characters, containing `@`.
    #[validate(
        length(min = EMAIL_LENGTH.min, max = EMAIL_LENGTH.max, code = "length"),
        custom(function = "valid_email")
    )]
    #[schema(
        max_length = 40,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*@[^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub email: Option<String>,
    /// 6–20 digits, optionally after a `+`.
    #[validate(custom(function = "valid_phone"))]
    #[schema(pattern = "^\\+?[0-9]{6,20}$")]
    pub phone: Option<String>,
    /// 1–32 characters, no control characters.
    #[validate(
        length(min = REALM_LENGTH.min, max = REALM_LENGTH.max, code = "length"),
        custom(function = "valid_text")
    )]
    #[schema(
        min_length = 1,
        max_length = 32,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    pub realm: Option<String>,
    /// A verification code of 6 digits (accepted, not checked).
    #[validate(custom(function = "valid_code"))]
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: Option<String>,
}

impl Body for SignUpRequest {
    const FIELDS: &'static [Field] = &[
        ("username", Kind::String),
        ("password", Kind::String),
        ("apikey", Kind::String),
        ("email", Kind::String),
        ("phone", Kind::String),
        ("realm", Kind::String),
        ("code", Kind::String),
    ];
}

impl fmt::Debug for SignUpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignUpRequest")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("apikey", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A sign-up that passed every check.
pub struct SignUp {
    pub username: String,
    pub password: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub realm: Option<String>,
}

impl SignUp {
    /// Reads and checks the body; `apikey` must be `key`.
    pub fn parse(object: &Map<String, Value>, key: &RegistrationKey<'_>) -> Result<Self> {
        let body: SignUpRequest = read_body(object, key)?;
        Ok(SignUp {
            username: required(body.username, "username")?,
            password: required(body.password, "password")?,
            email: body.email,
            phone: body.phone,
            realm: body.realm,
        })
    }
}

/// Login with the username, email or phone of the account.
#[derive(Deserialize, Validate, ToSchema)]
#[schema(example = json!({ "username": "alice_1", "password": "correct_horse1" }))]
pub struct LoginRequest {
    /// The account's username, email or phone: at most 64 characters.
    #[validate(
        required(code = "undefined"),
        length(max = LOGIN_NAME_LENGTH.max, code = "length")
    )]
    #[schema(value_type = String, required = true, max_length = 64)]
    pub username: Option<String>,
    #[validate(required(code = "undefined"))]
    #[schema(value_type = String, required = true)]
    pub password: Option<String>,
}

impl Body for LoginRequest {
    const FIELDS: &'static [Field] = &[("username", Kind::String), ("password", Kind::String)];
}

/// A login's name and password.
pub struct Login {
    pub username: String,
    pub password: String,
}

impl Login {
    pub fn parse(object: &Map<String, Value>) -> Result<Self> {
        let body: LoginRequest = read_body(object, ())?;
        Ok(Login {
            username: required(body.username, "username")?,
            password: required(body.password, "password")?,
        })
    }
}

/// A password change: the new password, and the current one.
#[derive(Deserialize, Validate, ToSchema)]
#[schema(example = json!({ "password": "new_horse_2", "oldpassword": "correct_horse1" }))]
pub struct PasswordChangeRequest {
    /// The new password: 8–16 characters of letters, digits and
    /// `_!@#$%^&*()+-=`.
    #[validate(
        required(code = "undefined"),
        length(min = PASSWORD_LENGTH.min, max = PASSWORD_LENGTH.max, code = "length"),
        custom(function = "valid_password")
    )]
    #[schema(
        value_type = String,
        required = true,
        min_length = 8,
        max_length = 16,
        pattern = "^[A-Za-z0-9_!@#$%^&*()+=-]*$"
    )]
    pub password: Option<String>,
    /// The current password; a wrong one is 400 `oldpassword error`, and
    /// counts as a failed login.
    #[validate(required(code = "undefined"))]
    #[schema(value_type = String, required = true)]
    pub oldpassword: Option<String>,
}

impl Body for PasswordChangeRequest {
    const FIELDS: &'static [Field] = &[("password", Kind::String), ("oldpassword", Kind::String)];
}

/// A password change that passed every check of its body.
pub struct PasswordChange {
    pub password: String,
    pub oldpassword: String,
}

impl PasswordChange {
    pub fn parse(object: &Map<String, Value>) -> Result<Self> {
        let body: PasswordChangeRequest = read_body(object, ())?;
        Ok(PasswordChange {
            password: required(body.password, "password")?,
            oldpassword: required(body.oldpassword, "oldpassword")?,
        })
    }
}

/// Logout. The session token travels in the body (vendor) or a header.
#[derive(Deserialize, Validate, ToSchema)]
#[schema(example = json!({ "username": "alice_1", "token": "9f2c3a41d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80" }))]
pub struct LogoutRequest {
    /// The session's user, by username, email or phone; another user is
    /// 400 `username error`.
    pub username: Option<String>,
    /// The session token to revoke (else the one of the header).
    pub token: Option<String>,
}

impl Body for LogoutRequest {
    const FIELDS: &'static [Field] = &[("username", Kind::String), ("token", Kind::String)];
}

impl LogoutRequest {
    pub fn parse(object: &Map<String, Value>) -> Result<Self> {
        read_body(object, ())
    }

    /// The session token a logout body carries, looked at before the body
    /// is checked (the session is authenticated first): a non-empty string
    /// `token`, else none.
    pub fn token_in(object: &Map<String, Value>) -> Option<&str> {
        object
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    }
}

#[derive(Deserialize, Validate, ToSchema)]
#[schema(example = json!({ "reflash_key": "41ab2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9" }))]
pub struct RefreshRequest {
    /// The refresh key of a live session; it can be used once.
    #[validate(required(code = "undefined"))]
    #[schema(value_type = String, required = true)]
    pub reflash_key: Option<String>,
}

impl Body for RefreshRequest {
    const FIELDS: &'static [Field] = &[("reflash_key", Kind::String)];
}

impl RefreshRequest {
    /// The refresh key of the body.
    pub fn parse(object: &Map<String, Value>) -> Result<String> {
        let body: RefreshRequest = read_body(object, ())?;
        required(body.reflash_key, "reflash_key")
    }
}

// ---------------------------------------------------------------------------
// Push tokens
// ---------------------------------------------------------------------------

/// A push-token registration (ring or message family).
#[derive(Deserialize, Validate, ToSchema)]
#[validate(context = Caller)]
#[schema(example = json!({
    "push_token": "0d5c2a6b1f0e4c3d9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f",
    "language": "zh", "dev": 0, "bundleid": "com.lancens.wxdoorbell",
    "os": "ANDROID", "os_token": "", "push_platform": "FCM",
    "phone_model": "phone:Xiaomi_Mi_10/App:钉钉智能_1.0.0/Android_11"
}))]
pub struct PushTokenRequest {
    /// Exactly 64 printable ASCII characters without spaces.
    #[validate(
        required(code = "undefined"),
        length(min = PUSH_TOKEN_LENGTH.min, max = PUSH_TOKEN_LENGTH.max, code = "length"),
        custom(function = "valid_visible_ascii")
    )]
    #[schema(
        value_type = String,
        required = true,
        min_length = 64,
        max_length = 64,
        pattern = "^[!-~]*$"
    )]
    pub push_token: Option<String>,
    /// 2–11 characters of `[A-Za-z0-9_-]`.
    #[validate(
        required(code = "undefined"),
        length(min = LANGUAGE_LENGTH.min, max = LANGUAGE_LENGTH.max, code = "length"),
        custom(function = "valid_word_or_dash")
    )]
    #[schema(
        value_type = String,
        required = true,
        min_length = 2,
        max_length = 11,
        pattern = "^[A-Za-z0-9_-]*$"
    )]
    pub language: Option<String>,
    /// 0 = release (APNs production), 1 = development (sandbox); default 0.
    #[validate(range(min = 0, max = 1, code = "invalid"))]
    #[schema(minimum = 0, maximum = 1)]
    pub dev: Option<i64>,
    /// 1–155 characters of `[A-Za-z0-9._-]`; default: the `bundleid`
    /// header, else the configured bundle id.
    #[validate(
        length(min = BUNDLEID_LENGTH.min, max = BUNDLEID_LENGTH.max, code = "length"),
        custom(function = "valid_bundle_chars")
    )]
    #[schema(min_length = 1, max_length = 155, pattern = "^[A-Za-z0-9._-]*$")]
    pub bundleid: Option<String>,
    /// Phone maker or system, at most 32 characters, no control characters.
    #[validate(
        length(min = OS_LENGTH.min, max = OS_LENGTH.max, code = "length"),
        custom(function = "valid_text")
    )]
    #[schema(max_length = 32, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub os: Option<String>,
    /// The maker's own push token: at most 4096 printable ASCII characters
    /// without spaces.
    #[validate(
        length(min = OS_TOKEN_LENGTH.min, max = OS_TOKEN_LENGTH.max, code = "length"),
        custom(function = "valid_visible_ascii")
    )]
    #[schema(max_length = 4096, pattern = "^[!-~]*$")]
    pub os_token: Option<String>,
    /// The Android push platform (`FCM`, `HUAWEI`, …): at most 32 characters
    /// of `[A-Za-z0-9_-]`.
    #[validate(
        length(min = PUSH_PLATFORM_LENGTH.min, max = PUSH_PLATFORM_LENGTH.max, code = "length"),
        custom(function = "valid_word_or_dash")
    )]
    #[schema(max_length = 32, pattern = "^[A-Za-z0-9_-]*$")]
    pub push_platform: Option<String>,
    /// At most 128 characters, no control characters.
    #[validate(
        length(min = PHONE_MODEL_LENGTH.min, max = PHONE_MODEL_LENGTH.max, code = "length"),
        custom(function = "valid_text")
    )]
    #[schema(max_length = 128, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*$")]
    pub phone_model: Option<String>,
    /// The caller's user id; 0 or absent is ignored, another user's id is
    /// 403 `id error`.
    #[validate(custom(function = "callers_id", use_context, code = "forbidden"))]
    pub id: Option<i64>,
}

impl Body for PushTokenRequest {
    const FIELDS: &'static [Field] = &[
        ("push_token", Kind::String),
        ("language", Kind::String),
        ("dev", Kind::Integer),
        ("bundleid", Kind::String),
        ("os", Kind::String),
        ("os_token", Kind::String),
        ("push_platform", Kind::String),
        ("phone_model", Kind::String),
        ("id", Kind::Integer),
    ];
}

/// A validated registration: required fields present, optional ones as sent.
#[derive(Clone)]
pub struct PushTokenInput {
    pub push_token: String,
    pub language: String,
    pub dev: Option<i64>,
    pub bundleid: Option<String>,
    pub os: Option<String>,
    pub os_token: Option<String>,
    pub push_platform: Option<String>,
    pub phone_model: Option<String>,
}

impl fmt::Debug for PushTokenInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushTokenInput")
            .field("push_token", &"[redacted]")
            .field("language", &self.language)
            .field("dev", &self.dev)
            .field("bundleid", &self.bundleid)
            .field("os", &self.os)
            .field("os_token", &self.os_token.as_ref().map(|_| "[redacted]"))
            .field("push_platform", &self.push_platform)
            .field("phone_model", &self.phone_model)
            .finish()
    }
}

impl PushTokenInput {
    /// Reads and checks the body for the user `caller`.
    pub fn parse(object: &Map<String, Value>, caller: i64) -> Result<Self> {
        let body: PushTokenRequest = read_body(object, &Caller(caller))?;
        Ok(PushTokenInput {
            push_token: required(body.push_token, "push_token")?,
            language: required(body.language, "language")?,
            dev: body.dev,
            bundleid: body.bundleid,
            os: body.os,
            os_token: body.os_token,
            push_platform: body.push_platform,
            phone_model: body.phone_model,
        })
    }
}

// ---------------------------------------------------------------------------
// Delivery
// ---------------------------------------------------------------------------

/// The largest event, as JSON text.
pub const MAX_EVENT_BYTES: usize = 8 * 1024;
/// The longest an event waits for a disconnected token, in seconds.
pub const MAX_TTL: i64 = 604_800;
pub const EVENT_TYPE_LENGTH: Length = Length { min: 1, max: 16 };
pub const EVENT_UID_LENGTH: Length = Length { min: 1, max: 64 };

/// An event for a user's phones.
#[derive(Deserialize, Validate, ToSchema)]
#[schema(example = json!({
    "user": "alice_1", "family": "ring",
    "event": { "type": "1", "uid": "LANCENS-000123-ABCDE", "message": "Someone is at the door" }
}))]
pub struct NotifyRequest {
    #[validate(required(code = "undefined"))]
    #[schema(value_type = NotifyUser, required = true)]
    pub user: Option<NotifyUser>,
    /// `ring` or `message`.
    #[validate(required(code = "undefined"), custom(function = "valid_family"))]
    #[schema(value_type = String, required = true, pattern = "^(ring|message)$")]
    pub family: Option<Value>,
    #[validate(
        required(code = "undefined"),
        custom(function = "valid_event_size", code = "length")
    )]
    #[schema(value_type = NotifyEvent, required = true)]
    pub event: Option<Map<String, Value>>,
    /// Seconds the event waits for a disconnected phone: 0 to 604800
    /// (default 60 for ring, 86400 for message).
    #[validate(range(min = 0, max = MAX_TTL, code = "invalid"))]
    #[schema(minimum = 0, maximum = 604800)]
    pub ttl: Option<i64>,
}

impl Body for NotifyRequest {
    const FIELDS: &'static [Field] = &[
        ("user", Kind::IntegerOrString),
        ("family", Kind::Any),
        ("event", Kind::Object(NotifyEvent::check)),
        ("ttl", Kind::Integer),
    ];
}

/// The user: an id (an integer) or a login name (a string: username, email
/// or phone).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum NotifyUser {
    Id(i64),
    Login(String),
}

/// The event, at most 8 KiB of JSON: `type` and `uid` at least; every
/// other key is passed on as sent; `id` and `family` are set by the
/// server, `time` added when absent.
#[derive(Deserialize, Validate, ToSchema)]
#[schema(example = json!({ "type": "1", "uid": "LANCENS-000123-ABCDE", "message": "Someone is at the door" }))]
pub struct NotifyEvent {
    /// The vendor's event type: `"1"` a doorbell call, `"0"` motion, `"2"`
    /// fingerprint unlock, …
    #[validate(
        required(code = "undefined"),
        length(min = EVENT_TYPE_LENGTH.min, max = EVENT_TYPE_LENGTH.max, code = "invalid")
    )]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 16)]
    pub r#type: Option<String>,
    /// The device's uid.
    #[validate(
        required(code = "undefined"),
        length(min = EVENT_UID_LENGTH.min, max = EVENT_UID_LENGTH.max, code = "invalid")
    )]
    #[schema(value_type = String, required = true, min_length = 1, max_length = 64)]
    pub uid: Option<String>,
}

impl Body for NotifyEvent {
    const FIELDS: &'static [Field] = &[("type", Kind::String), ("uid", Kind::String)];
}

impl NotifyEvent {
    /// The event's own rules: `undefined type`, `type format error`, `type
    /// error`, and the same for `uid`.
    pub fn check(event: &Map<String, Value>) -> Result<()> {
        read_body::<NotifyEvent>(event, ()).map(drop)
    }
}

fn valid_family(family: &Value) -> std::result::Result<(), ValidationError> {
    check(family_of(family).is_some())
}

fn family_of(value: &Value) -> Option<Family> {
    match value.as_str()? {
        "ring" => Some(Family::Ring),
        "message" => Some(Family::Message),
        _ => None,
    }
}

fn valid_event_size(event: &Map<String, Value>) -> std::result::Result<(), ValidationError> {
    // Counted as the JSON text it is stored and sent as.
    let mut size = ByteCount(0);
    let fits = serde_json::to_writer(&mut size, event).is_ok() && size.0 <= MAX_EVENT_BYTES;
    check(fits)
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A validated event to send.
#[derive(Debug)]
pub struct Notify {
    pub user: NotifyUser,
    pub family: Family,
    /// The event as sent (`type` and `uid` checked).
    pub event: Map<String, Value>,
    /// Seconds, the family's default when absent.
    pub ttl: i64,
}

impl Notify {
    /// The body's `user`, judged alone: the user is looked up (404 `no
    /// data error` for nobody) before the fields after it are judged.
    pub fn user(object: &Map<String, Value>) -> Result<NotifyUser> {
        let body: NotifyRequest = read_body_through(object, (), Some("user"))?;
        required(body.user, "user")
    }

    pub fn parse(object: &Map<String, Value>) -> Result<Self> {
        let body: NotifyRequest = read_body(object, ())?;
        let family = required(body.family.as_ref().and_then(family_of), "family")?;
        Ok(Notify {
            user: required(body.user, "user")?,
            family,
            event: required(body.event, "event")?,
            ttl: body.ttl.unwrap_or(match family {
                Family::Ring => 60,
                Family::Message => 86_400,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// What an error answers: status, message and field.
    fn answer<T>(result: Result<T>) -> Option<(u16, String, Option<&'static str>)> {
        result
            .err()
            .map(|e| (e.status().as_u16(), e.to_string(), e.field()))
    }

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(object) => object,
            other => panic!("not an object: {other}"),
        }
    }

    fn sign_up(body: Value) -> Result<SignUp> {
        SignUp::parse(&object(body), &RegistrationKey(Some("key")))
    }

    fn push_token(body: Value) -> Result<PushTokenInput> {
        PushTokenInput::parse(&object(body), 7)
    }

    fn valid_push_token() -> Value {
        json!({
            "push_token": "f".repeat(64), "language": "en", "dev": 1, "bundleid": "a.b",
            "os": "Huawei", "os_token": "t", "push_platform": "HUAWEI", "phone_model": "p40",
            "id": 7,
        })
    }

    fn valid_sign_up() -> Value {
        json!({
            "username": "alice_1", "password": "secret_1", "apikey": "key",
            "email": "a@b", "phone": "+123456", "realm": "home", "code": "123456",
        })
    }

    /// A value of another JSON type than `kind`.
    fn wrong_type(kind: Kind) -> Value {
        match kind {
            Kind::String | Kind::Any => json!(1),
            Kind::Integer => json!("1"),
            Kind::IntegerOrString => json!(true),
            Kind::Object(_) => json!("{}"),
        }
    }

    /// With fields `i..` of the wrong type, field `i` is the one reported,
    /// for every `i`: the order is `FIELDS`', not the struct's.
    fn assert_listed_order<T>(valid: Value, fields: &[Field], parse: impl Fn(Value) -> Result<T>) {
        assert!(parse(valid.clone()).is_ok(), "{valid}");
        for (i, &(name, _)) in fields.iter().enumerate() {
            let mut body = valid.clone();
            for &(later, kind) in &fields[i..] {
                body[later] = wrong_type(kind);
            }
            assert_eq!(
                answer(parse(body)),
                Some((400, format!("{name} format error"), Some(name)))
            );
        }
    }

    #[test]
    fn the_first_failing_field_is_reported_in_listed_order() {
        assert_listed_order(valid_sign_up(), SignUpRequest::FIELDS, sign_up);
        assert_listed_order(valid_push_token(), PushTokenRequest::FIELDS, push_token);
        let credentials = json!({ "username": "u", "password": "p" });
        assert_listed_order(credentials, LoginRequest::FIELDS, |b| {
            Login::parse(&object(b))
        });
        let logout = json!({ "username": "u", "token": "t" });
        assert_listed_order(logout, LogoutRequest::FIELDS, |b| {
            LogoutRequest::parse(&object(b))
        });
        let refresh = json!({ "reflash_key": "k" });
        assert_listed_order(refresh, RefreshRequest::FIELDS, |b| {
            RefreshRequest::parse(&object(b))
        });
    }

    #[test]
    fn a_fields_own_failure_comes_before_later_fields_of_the_wrong_type() {
        let body = json!({ "push_token": "short", "language": 1, "dev": "0" });
        assert_eq!(
            answer(push_token(body)),
            Some((400, "push_token length error".into(), Some("push_token")))
        );
        let body = json!({ "language": 1, "id": "x" });
        assert_eq!(
            answer(push_token(body)),
            Some((400, "undefined push_token".into(), Some("push_token")))
        );
        let body = json!({ "username": "123456", "password": 5 });
        assert_eq!(
            answer(sign_up(body)),
            Some((400, "username error".into(), Some("username")))
        );
    }

    #[test]
    fn null_counts_as_absent_and_unknown_fields_are_ignored() {
        let mut body = valid_push_token();
        // Every field after `push_token` and `language` is optional.
        for &(optional, _) in &PushTokenRequest::FIELDS[2..] {
            body[optional] = Value::Null;
        }
        body["os_push_version"] = json!(2);
        let input = push_token(body).unwrap();
        assert_eq!((input.dev, input.bundleid, input.os), (None, None, None));
        let mut body = valid_push_token();
        body["language"] = Value::Null;
        assert_eq!(
            answer(push_token(body)),
            Some((400, "undefined language".into(), Some("language")))
        );
    }

    #[test]
    fn a_wrong_registration_key_or_another_users_id_is_403() {
        let wrong_key = json!({ "username": "alice_1", "password": "secret_1", "apikey": "other" });
        let forbidden = Some((403, "apikey error".into(), Some("apikey")));
        assert_eq!(answer(sign_up(wrong_key.clone())), forbidden);
        let disabled = SignUp::parse(&object(wrong_key), &RegistrationKey(None));
        assert_eq!(answer(disabled), forbidden);
        let mut body = valid_push_token();
        body["id"] = json!(8);
        assert_eq!(
            answer(push_token(body.clone())),
            Some((403, "id error".into(), Some("id")))
        );
        for mine in [json!(0), json!(7), json!(7.0)] {
            body["id"] = mine;
            assert!(push_token(body.clone()).is_ok(), "{body}");
        }
    }

    #[test]
    fn command_line_credentials_follow_the_sign_up_rules() {
        assert!(check_username("alice_1").is_ok());
        assert!(check_password("secret_1").is_ok());
        for (result, said) in [
            (check_username("alice"), "username length error"),
            (check_username(&"a".repeat(33)), "username length error"),
            (check_username("123456"), "username error"),
            (check_username("alice-1"), "username error"),
            (check_password("secret1"), "password length error"),
            (check_password("secret 12"), "password error"),
        ] {
            assert_eq!(answer(result).map(|a| a.1), Some(said.to_owned()));
        }
    }

    #[test]
    fn bundle_ids_are_1_to_155_of_letters_digits_dots_dashes_and_underscores() {
        assert!(is_bundle_id("com.lancens.wxdoorbell"));
        assert!(is_bundle_id(&"a".repeat(155)));
        assert!(!is_bundle_id(""));
        assert!(!is_bundle_id(&"a".repeat(156)));
        assert!(!is_bundle_id("com/lancens"));
    }

    fn notify(body: Value) -> Result<Notify> {
        Notify::parse(&object(body))
    }

    #[test]
    fn a_notify_body_is_judged_user_family_event_and_its_fields_then_ttl() {
        let event =
            json!({ "type": "1", "uid": "DEV-1", "message": "hi", "aps": { "sound": "x" } });
        let sent = notify(json!({ "user": 7.0, "family": "message", "event": event })).unwrap();
        assert_eq!(sent.user, NotifyUser::Id(7));
        assert_eq!((sent.family, sent.ttl), (Family::Message, 86_400));
        assert_eq!(Value::Object(sent.event), event, "passed on as sent");
        let ring = notify(json!({ "user": "7", "family": "ring", "event": event, "ttl": 0 }));
        let ring = ring.unwrap();
        assert_eq!((ring.user, ring.ttl), (NotifyUser::Login("7".into()), 0));

        let big = json!({ "type": "1", "uid": "u", "m": "x".repeat(MAX_EVENT_BYTES) });
        for (body, said) in [
            (json!({ "family": 1, "ttl": "x" }), "undefined user"),
            (json!({ "user": [1], "family": 1 }), "user format error"),
            (
                json!({ "user": 1, "family": 1, "event": 1 }),
                "family error",
            ),
            (json!({ "user": 1, "family": "Ring" }), "family error"),
            (
                json!({ "user": 1, "family": "ring", "ttl": -1 }),
                "undefined event",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": [] }),
                "event format error",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": big }),
                "event length error",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": { "uid": 1 }, "ttl": "x" }),
                "undefined type",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": { "type": "", "uid": 1 } }),
                "type error",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": { "type": "1", "uid": 1 }, "ttl": -1 }),
                "uid format error",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": { "type": "1", "uid": "" } }),
                "uid error",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": event, "ttl": 604_801 }),
                "ttl error",
            ),
            (
                json!({ "user": 1, "family": "ring", "event": event, "ttl": "1" }),
                "ttl format error",
            ),
        ] {
            assert_eq!(
                answer(notify(body.clone())).map(|a| a.1),
                Some(said.into()),
                "{body}"
            );
        }
    }

    #[test]
    fn a_notify_user_is_read_before_the_rest_of_the_body_is_judged() {
        let user = |body: Value| Notify::user(&object(body));
        assert_eq!(
            user(json!({ "user": 3, "family": 1 })).unwrap(),
            NotifyUser::Id(3)
        );
        let named = user(json!({ "user": "alice_1", "event": "x" })).unwrap();
        assert_eq!(named, NotifyUser::Login("alice_1".into()));
        assert_eq!(
            answer(user(json!({ "family": "ring" }))).map(|a| a.1),
            Some("undefined user".into())
        );
        assert_eq!(
            answer(user(json!({ "user": 1.5 }))).map(|a| a.1),
            Some("user format error".into())
        );
    }

    #[test]
    fn json_integers_include_integral_floats_in_range() {
        for (text, expected) in [
            ("5", Some(5)),
            ("1.0", Some(1)),
            ("-3872874502856994.0", Some(-3_872_874_502_856_994)),
            ("-1.1831240732595036e+16", Some(-11_831_240_732_595_036)),
            ("0.5", None),
            ("1e300", None),
            ("9223372036854775808", None),
            ("\"1\"", None),
            ("true", None),
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(json_integer(&value), expected, "{text}");
        }
    }
}
