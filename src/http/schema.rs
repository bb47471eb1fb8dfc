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
        (name = "delivery", description = "Events sent to the push socket's connections, and their history"),
        (name = "operations", description = "Health and the API description")
    )
)]
pub struct ApiDoc;

#[cfg(test)]
mod tests {
    //! The document and the server agree on every field rule. For every
    //! field of every request body in the document, bodies are made at the
    //! edges of the field's rule and around it; each is judged by the
    //! server's own reading of the body and by the body's schema in the
    //! generated document, and the two verdicts must be the same.

    use std::collections::BTreeSet;

    use serde_json::{json, Map, Value};

    use crate::error::Error;
    use crate::model::{
        json_integer, Body, Field, Kind, Login, LoginRequest, LogoutRequest, Notify, NotifyEvent,
        NotifyRequest, PasswordChange, PasswordChangeRequest, PushTokenInput, PushTokenRequest,
        RefreshRequest, RegistrationKey, SignUp, SignUpRequest,
    };

    type Object = Map<String, Value>;

    /// The server's verdict on a body: accepted, or the error it answers.
    type Judge = fn(&Object) -> Result<(), Error>;

    /// The server's reading of each request body the document names, with
    /// the body's fields in the order the server checks them. Who the
    /// caller is (the registration key, the user id) is no rule of the
    /// document: the server is told that the body's own are right.
    fn server_bodies() -> Vec<(&'static str, Judge, &'static [Field])> {
        vec![
            (
                "SignUpRequest",
                |o: &Object| {
                    let key = RegistrationKey(o.get("apikey").and_then(Value::as_str));
                    SignUp::parse(o, &key).map(drop)
                },
                SignUpRequest::FIELDS,
            ),
            (
                "LoginRequest",
                |o: &Object| Login::parse(o).map(drop),
                LoginRequest::FIELDS,
            ),
            (
                "LogoutRequest",
                |o: &Object| LogoutRequest::parse(o).map(drop),
                LogoutRequest::FIELDS,
            ),
            (
                "PasswordChangeRequest",
                |o: &Object| PasswordChange::parse(o).map(drop),
                PasswordChangeRequest::FIELDS,
            ),
            (
                "RefreshRequest",
                |o: &Object| RefreshRequest::parse(o).map(drop),
                RefreshRequest::FIELDS,
            ),
            (
                "PushTokenRequest",
                |o: &Object| {
                    let caller = o.get("id").and_then(json_integer).unwrap_or(0);
                    PushTokenInput::parse(o, caller).map(drop)
                },
                PushTokenRequest::FIELDS,
            ),
            (
                "NotifyRequest",
                |o: &Object| Notify::parse(o).map(drop),
                NotifyRequest::FIELDS,
            ),
            ("NotifyEvent", NotifyEvent::check, NotifyEvent::FIELDS),
        ]
    }

    fn document() -> Value {
        serde_json::from_str(&crate::http::openapi().to_json().unwrap()).unwrap()
    }

    /// The component each operation's JSON request body refers to.
    fn request_bodies(doc: &Value) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for operations in doc["paths"].as_object().unwrap().values() {
            for operation in operations.as_object().unwrap().values() {
                let schema = &operation["requestBody"]["content"]["application/json"]["schema"];
                if schema.is_null() {
                    continue;
                }
                let choices = match schema["oneOf"].as_array() {
                    Some(choices) => choices.clone(),
                    None => vec![schema.clone()],
                };
                let refs: Vec<&str> = choices.iter().filter_map(|s| s["$ref"].as_str()).collect();
                assert_eq!(
                    refs.len(),
                    1,
                    "a request body names one component: {schema}"
                );
                let name = refs[0].strip_prefix("#/components/schemas/").unwrap();
                names.insert(name.to_owned());
            }
        }
        // An object a body's field refers to is read as a body of its own
        // (`Kind::Object`).
        let fields_of = |name: &String| {
            let properties = doc["components"]["schemas"][name]["properties"].clone();
            properties.as_object().cloned().unwrap_or_default()
        };
        let nested: Vec<String> = names
            .iter()
            .flat_map(fields_of)
            .filter_map(|(_, field)| {
                let name = field["$ref"]
                    .as_str()?
                    .strip_prefix("#/components/schemas/")?;
                let component = &doc["components"]["schemas"][name];
                component["properties"].is_object().then(|| name.to_owned())
            })
            .collect();
        names.extend(nested);
        names
    }

    /// OpenAPI's `int64` format is the range of a signed 64-bit integer;
    /// JSON Schema validators check formats of strings only, so the range
    /// is spelled out for them.
    fn with_int64_ranges(schema: &mut Value) {
        match schema {
            Value::Object(object) => {
                if object.get("format") == Some(&json!("int64")) {
                    object.entry("minimum").or_insert(json!(i64::MIN));
                    object.entry("maximum").or_insert(json!(i64::MAX));
                }
                object.values_mut().for_each(with_int64_ranges);
            }
            Value::Array(items) => items.iter_mut().for_each(with_int64_ranges),
            _ => {}
        }
    }

    /// A validator of the document's component `name`.
    fn schema_validator(doc: &Value, name: &str) -> jsonschema::Validator {
        let mut components = doc["components"].clone();
        with_int64_ranges(&mut components);
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$ref": format!("#/components/schemas/{name}"),
            "components": components,
        });
        jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .unwrap()
    }

    /// Characters at and just outside every character class of the API.
    const PROBES: &[char] = &[
        ' ', '\u{7f}', '\0', '\t', '\n', '\u{1f}', '\u{80}', '\u{85}', '\u{9f}', '\u{a0}',
        '\u{ad}', '\u{200b}', '\u{2028}', '\u{feff}', 'é', 'ß', 'Ω', '钉', '😀', '٣', '１', '@',
        '+', '-', '_', '.', '!', '~', '=', '#', '$', '%', '^', '&', '*', '(', ')', '/', ':', ',',
        '"', '\'', '\\', '`', '0', '9', 'a', 'z', 'A', 'Z',
    ];

    /// Values of the wrong JSON type for a field of `kind`, `null` included.
    fn wrong_types(kind: Kind) -> Vec<Value> {
        let mut values = vec![Value::Null, json!(true), json!([]), json!(["a"])];
        values.extend(match kind {
            Kind::String | Kind::Any => vec![json!({}), json!(0), json!(1), json!(1.5)],
            Kind::Integer => vec![json!({}), json!("1"), json!(""), json!(1.5), json!(1e300)],
            Kind::IntegerOrString => vec![json!({}), json!(1.5), json!(1e300)],
            Kind::Object(_) => vec![json!(""), json!("a"), json!(0), json!(1.5)],
        });
        values
    }

    /// Integers at the edges of ranges, spelled as integers and as floats.
    fn integers() -> Vec<Value> {
        let mut values: Vec<Value> = [-2, -1, 0, 1, 2, 7, i64::MIN, i64::MAX]
            .into_iter()
            .map(Value::from)
            .collect();
        for text in [
            "0.0",
            "-0.0",
            "1.0",
            "2.0",
            "-1.0",
            "9223372036854775807.0",
            "-9223372036854775808.0",
            "9223372036854775808",
            "18446744073709551615",
            "-9223372036854775809",
            "1e300",
            "-1e300",
        ] {
            values.push(serde_json::from_str(text).unwrap());
        }
        values
    }

    /// Strings of every length up to 72 characters and at the document's
    /// own length edges, each made of a few fillers.
    fn lengths(field_schema: &Value) -> Vec<String> {
        let mut counts: BTreeSet<usize> = (0..=72).collect();
        for key in ["minLength", "maxLength"] {
            if let Some(edge) = field_schema[key].as_u64() {
                let edge = edge as usize;
                counts.extend([edge.saturating_sub(1), edge, edge + 1]);
            }
        }
        let mut values = Vec::new();
        for n in counts {
            for filler in ['a', '1', '_', 'F'] {
                values.push(filler.to_string().repeat(n));
            }
            if n > 0 {
                values.push(format!("+{}", "1".repeat(n - 1)));
                values.push(format!("{}@", "a".repeat(n - 1)));
                values.push(format!("@{}", "a".repeat(n - 1)));
            }
        }
        values
    }

    /// `seed` with `c` in place of its first, middle and last characters,
    /// inserted in its middle, and in place of all of them.
    fn with_probe(seed: &str, c: char) -> Vec<String> {
        let chars: Vec<char> = seed.chars().collect();
        let mut values = Vec::new();
        for at in [0, chars.len() / 2, chars.len().saturating_sub(1)] {
            let mut replaced = chars.clone();
            if let Some(slot) = replaced.get_mut(at) {
                *slot = c;
                values.push(replaced.into_iter().collect());
            }
        }
        let mut inserted = chars.clone();
        inserted.insert(chars.len() / 2, c);
        values.push(inserted.into_iter().collect());
        values.push(c.to_string().repeat(chars.len().max(1)));
        values
    }

    #[test]
    fn document_and_server_agree_on_every_field_rule() {
        let doc = document();
        let bodies = server_bodies();
        let named: BTreeSet<String> = bodies.iter().map(|b| b.0.to_owned()).collect();
        let documented = request_bodies(&doc);
        assert_eq!(
            documented, named,
            "every request body of the document is read by the server"
        );

        let mut cases = 0;
        let mut disagreements = Vec::new();
        for (name, judge, fields) in bodies {
            let schema = &doc["components"]["schemas"][name];
            let validator = schema_validator(&doc, name);
            let listed: BTreeSet<&str> = fields.iter().map(|f| f.0).collect();
            let documented: BTreeSet<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(listed, documented, "{name}: the fields the server reads");

            let base = schema["example"].as_object().unwrap().clone();
            assert!(
                judge(&base).is_ok(),
                "{name}: the server accepts the example"
            );
            assert!(
                validator.is_valid(&Value::Object(base.clone())),
                "{name}: the document accepts its example"
            );

            for &(field, kind) in fields {
                let field_schema = &schema["properties"][field];
                let mut verdict = |value: Option<Value>| {
                    let mut body = base.clone();
                    match &value {
                        Some(value) => body.insert(field.to_owned(), value.clone()),
                        None => body.remove(field),
                    };
                    let server = judge(&body);
                    let accepted = server.is_ok();
                    let document = validator.is_valid(&Value::Object(body));
                    cases += 1;
                    if let Err(error) = &server {
                        assert_eq!(
                            error.field(),
                            Some(field),
                            "{name}.{field} = {value:?}: refused for another field: {error}"
                        );
                    }
                    if accepted != document {
                        disagreements.push(format!(
                            "{name}.{field} = {}: server {}, document {}",
                            value.map_or("absent".into(), |v| match v {
                                Value::String(s) => format!("{s:?}"),
                                other => other.to_string(),
                            }),
                            server.map_or_else(|e| format!("refuses ({e})"), |()| "accepts".into()),
                            if document { "accepts" } else { "refuses" },
                        ));
                    }
                    accepted && document
                };

                verdict(None);
                for value in wrong_types(kind) {
                    verdict(Some(value));
                }
                if matches!(kind, Kind::Integer | Kind::IntegerOrString) {
                    for value in integers() {
                        verdict(Some(value));
                    }
                }
                match kind {
                    // Its own fields are judged as a body of their own.
                    Kind::Object(_) | Kind::Integer => {}
                    Kind::String | Kind::Any | Kind::IntegerOrString => {
                        // Valid values found at the length edges seed the
                        // character probes, with the example's own.
                        let mut seeds: Vec<String> = base
                            .get(field)
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                            .into_iter()
                            .collect();
                        for value in lengths(field_schema) {
                            if verdict(Some(Value::String(value.clone()))) {
                                seeds.push(value);
                            }
                        }
                        seeds.sort_by_key(|s| s.chars().count());
                        seeds.dedup();
                        let picked: BTreeSet<String> =
                            [seeds.first(), seeds.get(seeds.len() / 2), seeds.last()]
                                .into_iter()
                                .flatten()
                                .cloned()
                                .collect();
                        assert!(!picked.is_empty(), "{name}.{field}: no valid value found");
                        for seed in &picked {
                            for &c in PROBES {
                                for value in with_probe(seed, c) {
                                    verdict(Some(Value::String(value)));
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(cases > 10_000, "{cases} cases");
        assert!(
            disagreements.is_empty(),
            "{} of {cases} bodies judged differently:\n{}",
            disagreements.len(),
            disagreements.join("\n")
        );
    }
}
