//! Request bodies: read field by field from a JSON object, validated with
//! `validator`, and reported as the first failing field in the order the API
//! lists them.

use std::fmt;

use serde_json::{Map, Value};
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::error::{Error, Result};

/// Reads typed fields from a JSON object, remembering the order in which they
/// were read and the first type error of each.
pub struct Fields<'a> {
    object: &'a Map<String, Value>,
    read: Vec<(&'static str, Option<Error>)>,
}

impl<'a> Fields<'a> {
    pub fn new(object: &'a Map<String, Value>) -> Self {
        Self {
            object,
            read: Vec::new(),
        }
    }

    fn value(&self, name: &str) -> Option<&'a Value> {
        self.object.get(name).filter(|v| !v.is_null())
    }

    /// A string field; `null` counts as absent, any other type is a format error.
    pub fn string(&mut self, name: &'static str) -> Option<String> {
        let (value, error) = match self.value(name) {
            None => (None, None),
            Some(Value::String(s)) => (Some(s.clone()), None),
            Some(_) => (None, Some(Error::Format(name))),
        };
        self.read.push((name, error));
        value
    }

    /// An integer field (a JSON number without fraction that fits an i64).
    pub fn integer(&mut self, name: &'static str) -> Option<i64> {
        let (value, error) = match self.value(name) {
            None => (None, None),
            Some(v) => match json_integer(v) {
                Some(n) => (Some(n), None),
                None => (None, Some(Error::Format(name))),
            },
        };
        self.read.push((name, error));
        value
    }

    /// The first failure in reading order: a type error, else the field's
    /// first validation error, else what `check` says of the field.
    pub fn first_error(
        self,
        validation: std::result::Result<(), ValidationErrors>,
        mut check: impl FnMut(&'static str) -> Result<()>,
    ) -> Result<()> {
        let errors = validation.err().map(ValidationErrors::into_errors);
        for (name, type_error) in self.read {
            if let Some(error) = type_error {
                return Err(error);
            }
            if let Some(ValidationErrorsKind::Field(list)) =
                errors.as_ref().and_then(|e| e.get(name))
            {
                if let Some(first) = list.first() {
                    return Err(match first.code.as_ref() {
                        "undefined" => Error::Undefined(name),
                        "length" => Error::Length(name),
                        _ => Error::Invalid(name),
                    });
                }
            }
            check(name)?;
        }
        Ok(())
    }
}

/// A JSON number with no fractional part that fits an i64 (`1.0` is the
/// integer 1, as JSON Schema counts it).
pub fn json_integer(value: &Value) -> Option<i64> {
    const LIMIT: f64 = 9_223_372_036_854_775_808.0; // 2^63
    value.as_i64().or_else(|| {
        let f = value.as_f64()?;
        (f.fract() == 0.0 && (-LIMIT..LIMIT).contains(&f)).then_some(f as i64)
    })
}

fn invalid() -> ValidationError {
    ValidationError::new("invalid")
}

fn check(ok: bool) -> std::result::Result<(), ValidationError> {
    if ok {
        Ok(())
    } else {
        Err(invalid())
    }
}

fn word_chars(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub fn valid_username(s: &str) -> std::result::Result<(), ValidationError> {
    check(word_chars(s) && !s.bytes().all(|b| b.is_ascii_digit()))
}

pub fn valid_password(s: &str) -> std::result::Result<(), ValidationError> {
    check(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_!@#$%^&*()+-=".contains(&b)),
    )
}

fn valid_email(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.contains('@') && !s.chars().any(char::is_control))
}

fn valid_phone(s: &str) -> std::result::Result<(), ValidationError> {
    let digits = s.strip_prefix('+').unwrap_or(s);
    check((6..=20).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()))
}

fn valid_code(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.len() == 6 && s.bytes().all(|b| b.is_ascii_digit()))
}

fn no_control(s: &str) -> std::result::Result<(), ValidationError> {
    check(!s.chars().any(char::is_control))
}

/// Printable ASCII without spaces (`!` to `~`).
fn visible_ascii(s: &str) -> std::result::Result<(), ValidationError> {
    check(s.bytes().all(|b| b.is_ascii_graphic()))
}

/// Letters, digits, `_` and `-` (language codes, push platforms).
fn word_or_dash(s: &str) -> std::result::Result<(), ValidationError> {
    check(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
    )
}

pub fn bundle_chars(s: &str) -> std::result::Result<(), ValidationError> {
    check(
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'),
    )
}

/// Whether `s` is a valid bundle id (1–155 of `[A-Za-z0-9._-]`).
pub fn is_bundle_id(s: &str) -> bool {
    (1..=155).contains(&s.chars().count()) && bundle_chars(s).is_ok()
}

/// `POST /v1/api/user`.
#[derive(Validate)]
pub struct SignUp {
    #[validate(
        required(code = "undefined"),
        length(min = 6, max = 32, code = "length"),
        custom(function = "valid_username")
    )]
    pub username: Option<String>,
    #[validate(
        required(code = "undefined"),
        length(min = 8, max = 16, code = "length"),
        custom(function = "valid_password")
    )]
    pub password: Option<String>,
    #[validate(required(code = "undefined"))]
    pub apikey: Option<String>,
    #[validate(length(max = 40, code = "length"), custom(function = "valid_email"))]
    pub email: Option<String>,
    #[validate(custom(function = "valid_phone"))]
    pub phone: Option<String>,
    #[validate(
        length(min = 1, max = 32, code = "length"),
        custom(function = "no_control")
    )]
    pub realm: Option<String>,
    #[validate(custom(function = "valid_code"))]
    pub code: Option<String>,
}

impl fmt::Debug for SignUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignUp")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .field("apikey", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl SignUp {
    /// Reads and validates the body; `apikey_ok` judges the key in its turn.
    pub fn parse(object: &Map<String, Value>, apikey_ok: impl Fn(&str) -> bool) -> Result<Self> {
        let mut fields = Fields::new(object);
        let body = SignUp {
            username: fields.string("username"),
            password: fields.string("password"),
            apikey: fields.string("apikey"),
            email: fields.string("email"),
            phone: fields.string("phone"),
            realm: fields.string("realm"),
            code: fields.string("code"),
        };
        fields.first_error(body.validate(), |name| match (name, &body.apikey) {
            ("apikey", Some(key)) if !apikey_ok(key) => Err(Error::Invalid("apikey")),
            _ => Ok(()),
        })?;
        Ok(body)
    }
}

/// Checks a username and password by the sign-up rules (used by the CLI).
pub fn check_credentials(username: &str, password: &str) -> Result<()> {
    let mut object = Map::new();
    object.insert("username".into(), username.into());
    object.insert("password".into(), password.into());
    object.insert("apikey".into(), "".into());
    SignUp::parse(&object, |_| true).map(drop)
}

/// A required, non-null string field with no further rule.
pub fn required_string(object: &Map<String, Value>, name: &'static str) -> Result<String> {
    match object.get(name) {
        None | Some(Value::Null) => Err(Error::Undefined(name)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(Error::Format(name)),
    }
}

/// The body of a push-token registration (`POST` and `PUT`).
#[derive(Validate)]
pub struct PushTokenBody {
    #[validate(
        required(code = "undefined"),
        length(equal = 64, code = "length"),
        custom(function = "visible_ascii")
    )]
    pub push_token: Option<String>,
    #[validate(
        required(code = "undefined"),
        length(min = 2, max = 11, code = "length"),
        custom(function = "word_or_dash")
    )]
    pub language: Option<String>,
    #[validate(range(min = 0, max = 1, code = "invalid"))]
    pub dev: Option<i64>,
    #[validate(
        length(min = 1, max = 155, code = "length"),
        custom(function = "bundle_chars")
    )]
    pub bundleid: Option<String>,
    #[validate(length(max = 32, code = "length"), custom(function = "no_control"))]
    pub os: Option<String>,
    #[validate(
        length(max = 4096, code = "length"),
        custom(function = "visible_ascii")
    )]
    pub os_token: Option<String>,
    #[validate(length(max = 32, code = "length"), custom(function = "word_or_dash"))]
    pub push_platform: Option<String>,
    #[validate(length(max = 128, code = "length"), custom(function = "no_control"))]
    pub phone_model: Option<String>,
    pub id: Option<i64>,
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
    /// Reads and validates the body for the user `caller`.
    pub fn parse(object: &Map<String, Value>, caller: i64) -> Result<Self> {
        let mut fields = Fields::new(object);
        let body = PushTokenBody {
            push_token: fields.string("push_token"),
            language: fields.string("language"),
            dev: fields.integer("dev"),
            bundleid: fields.string("bundleid"),
            os: fields.string("os"),
            os_token: fields.string("os_token"),
            push_platform: fields.string("push_platform"),
            phone_model: fields.string("phone_model"),
            id: fields.integer("id"),
        };
        fields.first_error(body.validate(), |name| match (name, body.id) {
            ("id", Some(id)) if id != 0 && id != caller => Err(Error::Invalid("id")),
            _ => Ok(()),
        })?;
        let (Some(push_token), Some(language)) = (body.push_token, body.language) else {
            // Unreachable after validation (both are `required`), kept total.
            return Err(Error::Paramer);
        };
        Ok(PushTokenInput {
            push_token,
            language,
            dev: body.dev,
            bundleid: body.bundleid,
            os: body.os,
            os_token: body.os_token,
            push_platform: body.push_platform,
            phone_model: body.phone_model,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
