//! Hostile input: property-based bodies, headers and path segments through
//! the router on every backend, and slow or oversized clients against the
//! real binary.
//!
//! The properties, for every request a generated case sends: the server
//! never panics and never answers 5xx (its database works), always answers
//! JSON with a `message` string and a status `openapi.yaml` lists, and when
//! it refuses (4xx) nothing changes: both families' rows of the caller and of
//! another user, the accounts, the active sessions, and the caller can still
//! log in. A success (2xx) may change the caller's data (the case was valid
//! after all); the other user's rows never change.
//!
//! `HOSTILE_SEED` (decimal or `0x` hex) replays a run, `HOSTILE_CASES` sets
//! the number of cases per scenario (default 256). A failing case is shrunk
//! (proptest's value trees, driven by hand since the checks are async) and
//! reported with the seed.

use std::fmt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::BodyExt;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::{BoxedStrategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;

use crate::support::api::{push_token, sign_up_body, API_KEY, FAMILIES, PASSWORD, SIGN_UP};
use crate::support::openapi::assert_documented;
use crate::support::server::{sqlite_in, Server};
use crate::support::{every_backend, TestApp};

// ---------------------------------------------------------------------------
// Generated cases
// ---------------------------------------------------------------------------

/// Stand-ins replaced, when a case is sent, by the caller's live secrets.
const TOKEN: &str = "<<TOKEN>>";
const REFLASH: &str = "<<REFLASH>>";
/// The caller's username.
const USER: &str = "hostile_1";
/// Another user, whose rows nothing the caller sends may touch.
const VICTIM: &str = "victim_1";

const SIGN_UP_FIELDS: &[&str] = &[
    "username", "password", "apikey", "email", "phone", "realm", "code",
];
const LOGIN_FIELDS: &[&str] = &["username", "password"];
const LOGOUT_FIELDS: &[&str] = &["username", "token"];
const REFRESH_FIELDS: &[&str] = &["reflash_key"];
const PUSH_FIELDS: &[&str] = &[
    "push_token",
    "language",
    "dev",
    "bundleid",
    "os",
    "os_token",
    "push_platform",
    "phone_model",
    "id",
];

#[derive(Clone, Debug)]
enum Target {
    SignUp,
    Login,
    Logout,
    Refresh,
    /// `POST {family}`.
    Post(usize),
    /// `PUT {family}/{segment}`, the segment as it goes in the URI.
    Put(usize, String),
    /// `DELETE {family}/{segment}`.
    Delete(usize, String),
}

#[derive(Clone, Debug)]
enum Auth {
    /// `token: <the caller's session>`.
    Token,
    /// `Authorization: Bearer <the caller's session>`.
    Bearer,
    None,
    /// `token: <this>`.
    Forged(String),
}

#[derive(Clone)]
struct Case {
    target: Target,
    auth: Auth,
    body: Vec<u8>,
    bundleid: Option<Vec<u8>>,
    content_type: Option<&'static str>,
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |bytes: &[u8]| {
            let text = bytes.escape_ascii().to_string();
            if text.len() > 3000 {
                format!("{}… ({} bytes)", &text[..3000], bytes.len())
            } else {
                format!("b\"{text}\" ({} bytes)", bytes.len())
            }
        };
        f.debug_struct("Case")
            .field("target", &self.target)
            .field("auth", &self.auth)
            .field("body", &format_args!("{}", shown(&self.body)))
            .field(
                "bundleid",
                &self
                    .bundleid
                    .as_deref()
                    .map(|b| b.escape_ascii().to_string()),
            )
            .field("content_type", &self.content_type)
            .finish()
    }
}

/// Strings a validator may trip on: any chars (control ones included),
/// boundary lengths, very long runs, look-alikes of other types.
fn hostile_string() -> BoxedStrategy<String> {
    prop_oneof![
        4 => vec(any::<char>(), 0..80).prop_map(String::from_iter),
        2 => "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}a]{1,12}",
        3 => "[A-Za-z0-9_.-]{0,160}",
        2 => "[0-9a-f]{62,66}",
        2 => "[!-~]{60,68}",
        2 => "\\PC{0,140}",
        1 => "\\+?[0-9]{0,24}",
        1 => "[a-z]{0,30}@[a-z]{0,30}",
        1 => (0usize..20_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
        1 => (0usize..200, select(vec!["😀", "钉", "\u{301}", "\u{202e}", "\u{feff}", "\0"]))
            .prop_map(|(n, s)| s.repeat(n)),
        3 => select(vec![
            "", " ", "\t", "\u{0}", "a\u{0}b", "\u{feff}en", "en\n", "钉钉智能", "Ünïcödé",
            "null", "0", "1.0", "-1", "true", "[]", "{}", "\"", "\\", "%00", "' OR 1=1 --",
            "com.lancens.wxdoorbell", "FCM", "en", "zh-Hans_CN", TOKEN, REFLASH, USER, VICTIM,
            API_KEY, PASSWORD,
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

fn hostile_number() -> BoxedStrategy<Value> {
    prop_oneof![
        (-3i64..4).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from), // NaN and infinities become null
        select(vec![
            0.5,
            1.0,
            -0.0,
            -1.0,
            2.0,
            1e300,
            -1e300,
            9_223_372_036_854_775_808.0,
            -9_223_372_036_854_775_808.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::EPSILON,
        ])
        .prop_map(Value::from),
    ]
    .boxed()
}

/// Any JSON value, nested a few levels, keys often the routes' field names.
fn hostile_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        3 => hostile_number(),
        4 => hostile_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            2 => select(
                [SIGN_UP_FIELDS, LOGOUT_FIELDS, REFRESH_FIELDS, PUSH_FIELDS].concat()
            )
            .prop_map(str::to_owned),
            1 => hostile_string(),
        ];
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            vec((key, inner), 0..6).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

/// JSON number literals a `Value` cannot hold: huge, tiny, long fractions.
fn number_literal() -> BoxedStrategy<String> {
    prop_oneof![
        "-?[0-9]{1,400}(\\.[0-9]{0,60})?([eE][+-]?[0-9]{1,7})?",
        select(vec![
            "1e999",
            "-1e999",
            "1e-999",
            "-0",
            "0e0",
            "1E+2",
            "1.0",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "01",
            "1.",
            ".5",
            "+1",
            "NaN",
            "Infinity",
            "0x10",
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

/// The text of a JSON object whose members are written out as given, so a
/// key may come twice and a value may be any literal.
fn object_text(members: &[(String, String)]) -> Vec<u8> {
    let inner: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.clone())))
        .collect();
    format!("{{{}}}", inner.join(",")).into_bytes()
}

/// Bodies for a route with `fields`, starting from the valid `base`.
fn body(
    fields: &'static [&'static str],
    base: BoxedStrategy<Map<String, Value>>,
) -> BoxedStrategy<Vec<u8>> {
    let field = || select(fields.to_vec()).prop_map(str::to_owned);
    // A valid body with a few fields replaced by hostile values or removed.
    let mutated = (
        base.clone(),
        vec(
            (
                field(),
                proptest::option::weighted(
                    0.85,
                    prop_oneof![
                        3 => hostile_string().prop_map(Value::String),
                        1 => hostile_number(),
                        1 => hostile_value(),
                    ],
                ),
            ),
            1..3,
        ),
    )
        .prop_map(|(mut map, changes)| {
            for (name, value) in changes {
                match value {
                    Some(v) => map.insert(name, v),
                    None => map.remove(&name),
                };
            }
            map
        })
        .boxed();
    // Raw member text: a valid body, then duplicated keys with any literal.
    let literal = prop_oneof![
        3 => hostile_value().prop_map(|v| v.to_string()),
        1 => number_literal(),
    ];
    let duplicated = (base.clone(), vec((field(), literal), 1..4))
        .prop_map(|(map, extra)| {
            let mut members: Vec<(String, String)> =
                map.into_iter().map(|(k, v)| (k, v.to_string())).collect();
            members.extend(extra);
            object_text(&members)
        })
        .boxed();
    // A valid body with bytes inserted, overwritten (invalid UTF-8 too) or cut.
    let corrupted = (
        mutated.clone(),
        vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(|(map, edits)| {
            let mut bytes = serde_json::to_vec(&map).unwrap();
            for (at, byte, how) in edits {
                let i = at.index(bytes.len() + 1);
                match how {
                    0 => bytes.insert(i, byte),
                    1 if i < bytes.len() => bytes[i] = byte,
                    _ => bytes.truncate(i),
                }
            }
            bytes
        })
        .boxed();
    // Invalid UTF-8 (or raw control bytes) inside a field's string.
    let bad_utf8 = (
        base.clone(),
        field(),
        vec(
            prop_oneof![0x80u8..=0xff, 0u8..0x20, Just(b'\\'), Just(b'"')],
            1..16,
        ),
    )
        .prop_map(|(map, name, raw)| {
            let mut text = serde_json::to_vec(&map).unwrap();
            text.pop(); // the closing brace
            if !map.is_empty() {
                text.push(b',');
            }
            text.extend_from_slice(format!("{}:\"", Value::String(name)).as_bytes());
            text.extend_from_slice(&raw);
            text.extend_from_slice(b"\"}");
            text
        })
        .boxed();
    // Nesting, deep enough to pass or to trip the parser's recursion limit.
    let nested = (
        base.clone(),
        field(),
        1usize..3000,
        select(vec![("[", "]"), ("{\"a\":", "}")]),
    )
        .prop_map(|(map, name, depth, (open, close))| {
            let mut text = serde_json::to_string(&map).unwrap();
            text.pop();
            if !map.is_empty() {
                text.push(',');
            }
            text.push_str(&format!("{}:", Value::String(name)));
            text.push_str(&open.repeat(depth));
            text.push('1');
            text.push_str(&close.repeat(depth));
            text.push('}');
            text.into_bytes()
        })
        .boxed();
    let special = select(vec![
        &b""[..],
        b" \r\n\t",
        b"{}",
        b"[]",
        b"null",
        b"\"\\ud800\"",
        b"{\"a\":\"\\ud800\"}",
        b"{\"a\":\"\\udc00\\ud800\"}",
        b"\xef\xbb\xbf{}",
        b"{\"a\":1}{\"b\":2}",
        b"{\"a\":1,}",
        b"{'a':1}",
        b"{\"\\u0000\":\"\\u0000\"}",
        b"\x00",
    ])
    .prop_map(<[u8]>::to_vec);
    prop_oneof![
        8 => mutated.prop_map(|m| serde_json::to_vec(&m).unwrap()),
        1 => hostile_value().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        2 => duplicated,
        2 => corrupted,
        1 => bad_utf8,
        1 => nested,
        1 => vec(any::<u8>(), 0..512),
        1 => special,
    ]
    .boxed()
}

fn object(members: Vec<(&str, Value)>) -> Map<String, Value> {
    members
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn sign_up_base() -> BoxedStrategy<Map<String, Value>> {
    "[a-z][a-z0-9_]{5,20}"
        .prop_map(|name| {
            object(vec![
                ("username", json!(name)),
                ("password", json!(PASSWORD)),
                ("apikey", json!(API_KEY)),
            ])
        })
        .boxed()
}

fn push_base() -> BoxedStrategy<Map<String, Value>> {
    let token = prop_oneof![
        3 => "[0-9a-f]{64}",
        1 => select(vec![push_token(1), push_token(2), push_token(3)]),
    ];
    (token, select(vec!["en", "zh", "zh-Hans_CN"]))
        .prop_map(|(token, language)| {
            object(vec![
                ("push_token", json!(token)),
                ("language", json!(language)),
            ])
        })
        .boxed()
}

/// A path segment for `{serial}`: a serial, or anything at all (percent-
/// encoded), or raw URI characters with stray `%`.
fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        2 => (0i64..5).prop_map(|n| n.to_string()),
        1 => select(vec![
            "9223372036854775807", "9223372036854775808", "00000000000000000000001", "-0",
            "-1", "+1", "1.0", "1e3", "0x10", " 1", "1 ", "%31", "%2F", "%2f1", "%00", "%ff",
            "%", "%%", "%zz", "%e2%82", "..", ".", "%2e%2e", "%EF%BC%91", "%D9%A1", "1%00",
            "1;a", "1,2", "a@b:c", "~", "null", "undefined", "NaN",
        ])
        .prop_map(str::to_owned),
        3 => vec(any::<char>(), 0..40).prop_map(|c| percent_encode(&String::from_iter(c))),
        2 => "[0-9]{1,40}",
        2 => "[A-Za-z0-9%._~!$&'()*+,;=:@-]{0,30}",
    ]
    .boxed()
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn auth() -> BoxedStrategy<Auth> {
    prop_oneof![
        20 => Just(Auth::Token),
        1 => Just(Auth::Bearer),
        1 => Just(Auth::None),
        1 => "[ -~]{0,80}".prop_map(Auth::Forged),
    ]
    .boxed()
}

fn extras() -> BoxedStrategy<(Option<Vec<u8>>, Option<&'static str>)> {
    let bundleid = proptest::option::weighted(
        0.3,
        prop_oneof![
            "[A-Za-z0-9._-]{0,160}".prop_map(String::into_bytes),
            vec(
                prop_oneof![0x20u8..0x7f, 0x80u8..=0xff, Just(b'\t')],
                0..200
            ),
        ],
    );
    let content_type = proptest::option::weighted(
        0.4,
        select(vec![
            "application/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/json; charset=latin1",
            "nonsense",
        ]),
    );
    (bundleid, content_type).boxed()
}

fn case(target: BoxedStrategy<Target>, body: BoxedStrategy<Vec<u8>>) -> BoxedStrategy<Case> {
    (target, auth(), body, extras())
        .prop_map(|(target, auth, body, (bundleid, content_type))| Case {
            target,
            auth,
            body,
            bundleid,
            content_type,
        })
        .boxed()
}

/// Sign-up, login, logout and refresh with hostile bodies.
fn account_cases() -> BoxedStrategy<Case> {
    let with = |target: Target, body: BoxedStrategy<Vec<u8>>| case(Just(target).boxed(), body);
    let login_base = Just(object(vec![
        ("username", json!(USER)),
        ("password", json!(PASSWORD)),
    ]));
    let logout_base = Just(object(vec![
        ("username", json!(USER)),
        ("token", json!(TOKEN)),
    ]));
    let refresh_base = Just(object(vec![("reflash_key", json!(REFLASH))]));
    prop_oneof![
        with(Target::SignUp, body(SIGN_UP_FIELDS, sign_up_base())),
        with(Target::Login, body(LOGIN_FIELDS, login_base.boxed())),
        with(Target::Logout, body(LOGOUT_FIELDS, logout_base.boxed())),
        with(Target::Refresh, body(REFRESH_FIELDS, refresh_base.boxed())),
    ]
    .boxed()
}

/// `POST` and `PUT` of both families with hostile bodies (valid serials).
fn push_token_cases() -> BoxedStrategy<Case> {
    let target = prop_oneof![
        (0usize..2).prop_map(Target::Post),
        (0usize..2, 0i64..5).prop_map(|(f, s)| Target::Put(f, s.to_string())),
    ];
    case(target.boxed(), body(PUSH_FIELDS, push_base()))
}

/// `PUT` and `DELETE` of both families at hostile serials.
fn serial_cases() -> BoxedStrategy<Case> {
    let target = prop_oneof![
        (0usize..2, segment()).prop_map(|(f, s)| Target::Put(f, s)),
        (0usize..2, segment()).prop_map(|(f, s)| Target::Delete(f, s)),
    ];
    let body = prop_oneof![
        2 => push_base().prop_map(|m| serde_json::to_vec(&m).unwrap()),
        1 => body(PUSH_FIELDS, push_base()),
    ];
    case(target.boxed(), body.boxed())
}

// ---------------------------------------------------------------------------
// Running cases against a server
// ---------------------------------------------------------------------------

/// What a refused request must leave as it was.
#[derive(Debug, PartialEq)]
struct Snapshot {
    lists: Vec<Value>,
    victim_lists: Vec<Value>,
    users: String,
    sessions: i64,
}

/// A server with the caller and the victim, each holding rows in both
/// families.
struct World {
    app: TestApp,
    token: String,
    reflash_key: String,
    victim_token: String,
}

fn seed_rows(n: u32) -> Vec<(usize, i64, Value)> {
    vec![
        (
            0,
            1,
            json!({ "push_token": push_token(n), "language": "en", "os": "ANDROID",
                    "push_platform": "FCM", "phone_model": "phone:Xiaomi/App:钉钉智能_1.0.0" }),
        ),
        (
            0,
            7,
            json!({ "push_token": push_token(n + 1), "language": "zh", "dev": 1 }),
        ),
        (
            1,
            2,
            json!({ "push_token": push_token(n), "language": "en", "bundleid": "a.b" }),
        ),
    ]
}

impl World {
    async fn new(app: TestApp) -> World {
        // The rate limits would refuse the many logins these checks make;
        // they have tests of their own.
        let app = app
            .with_flags(&["--auth-rate-per-minute", "0", "--login-max-failures", "0"])
            .await;
        let victim = app.user(VICTIM).await;
        for (family, serial, body) in seed_rows(1000) {
            let uri = format!("{}/{serial}", FAMILIES[family]);
            let reply = app.put(&uri, &victim.token, body).await;
            assert!(reply.status.is_success(), "{:?}", reply.body);
        }
        let user = app.user(USER).await;
        let mut world = World {
            app,
            token: user.token,
            reflash_key: user.reflash_key,
            victim_token: victim.token,
        };
        world.restore().await;
        world
    }

    /// A fresh session for the caller and their rows as seeded.
    async fn restore(&mut self) {
        let reply = self.app.login(USER, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        self.token = reply.body["token"].as_str().unwrap().to_owned();
        self.reflash_key = reply.body["reflash_key"].as_str().unwrap().to_owned();
        for base in FAMILIES {
            let reply = self.app.delete(base, &self.token).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        }
        for (family, serial, body) in seed_rows(1) {
            let uri = format!("{}/{serial}", FAMILIES[family]);
            let reply = self.app.put(&uri, &self.token, body).await;
            assert!(reply.status.is_success(), "{:?}", reply.body);
        }
    }

    async fn lists(&self, token: &str) -> Result<Vec<Value>, String> {
        let mut lists = Vec::new();
        for base in FAMILIES {
            let reply = self.app.get(base, token).await;
            if reply.status != StatusCode::OK {
                return Err(format!(
                    "GET {base} answered {} {}",
                    reply.status, reply.body
                ));
            }
            lists.push(reply.body);
        }
        Ok(lists)
    }

    async fn snapshot(&self) -> Result<Snapshot, String> {
        let store = &self.app.state.store;
        Ok(Snapshot {
            lists: self.lists(&self.token).await?,
            victim_lists: self.lists(&self.victim_token).await?,
            users: format!("{:?}", store.list_users().await.map_err(|e| e.to_string())?),
            sessions: store
                .count_active_sessions(pushtoken::unix_now())
                .await
                .map_err(|e| e.to_string())?,
        })
    }

    fn substitute(&self, bytes: &[u8]) -> Vec<u8> {
        let text = bytes.escape_ascii().to_string();
        if !text.contains("<<") {
            return bytes.to_vec();
        }
        let mut out = bytes.to_vec();
        for (from, to) in [(TOKEN, &self.token), (REFLASH, &self.reflash_key)] {
            out = replace(&out, from.as_bytes(), to.as_bytes());
        }
        out
    }

    fn request(&self, case: &Case) -> Request<Body> {
        let (method, path) = match &case.target {
            Target::SignUp => (Method::POST, "/v1/api/user".to_owned()),
            Target::Login => (Method::POST, "/v1/api/user/login".to_owned()),
            Target::Logout => (Method::POST, "/v1/api/user/logout".to_owned()),
            Target::Refresh => (Method::POST, "/v1/api/user/refresh".to_owned()),
            Target::Post(f) => (Method::POST, FAMILIES[*f].to_owned()),
            Target::Put(f, s) => (Method::PUT, format!("{}/{}", FAMILIES[*f], s)),
            Target::Delete(f, s) => (Method::DELETE, format!("{}/{}", FAMILIES[*f], s)),
        };
        // A segment that is no valid URI could not reach the router over the
        // wire (the HTTP parser refuses it); send it percent-encoded instead.
        let path = match path.parse::<Uri>() {
            Ok(uri) if uri.path() == path => path,
            _ => match &case.target {
                Target::Put(f, s) | Target::Delete(f, s) => {
                    format!("{}/{}", FAMILIES[*f], percent_encode(s))
                }
                _ => unreachable!("fixed paths are valid"),
            },
        };
        let mut builder = Request::builder().method(method).uri(path);
        match &case.auth {
            Auth::Token => builder = builder.header("token", &self.token),
            Auth::Bearer => {
                builder = builder.header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            }
            Auth::None => {}
            Auth::Forged(value) => builder = builder.header("token", value),
        }
        if let Some(bytes) = &case.bundleid {
            builder = builder.header("bundleid", HeaderValue::from_bytes(bytes).unwrap());
        }
        if let Some(value) = case.content_type {
            builder = builder.header(header::CONTENT_TYPE, value);
        }
        builder
            .body(Body::from(self.substitute(&case.body)))
            .expect("a well-formed request")
    }

    /// Sends `case` and checks every property; leaves the world usable.
    async fn check(&mut self, case: &Case) -> Result<String, String> {
        let before = self.snapshot().await?;
        let request = self.request(case);
        let (method, uri) = (request.method().clone(), request.uri().to_string());
        let response = AssertUnwindSafe(self.app.router().oneshot(request));
        let response = futures_util::FutureExt::catch_unwind(response)
            .await
            .map_err(|_| "the router panicked".to_owned())?
            .expect("router is infallible");
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("reading the body failed: {e}"))?
            .to_bytes();
        let said = || format!("{method} {uri} answered {status} {}", bytes.escape_ascii());
        if status.is_server_error() {
            return Err(format!("server error: {}", said()));
        }
        if !(status.is_success() || status.is_client_error()) {
            return Err(format!("unexpected status: {}", said()));
        }
        let json: Value =
            serde_json::from_slice(&bytes).map_err(|_| format!("not JSON: {}", said()))?;
        if !json["message"].is_string() {
            return Err(format!("no message string: {}", said()));
        }
        if !content_type
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
        {
            return Err(format!("content-type {content_type:?}: {}", said()));
        }
        // `{family}/` (an empty serial) matches no route: the JSON 404, which
        // the document's `{serial}` template would wrongly claim.
        let unrouted = uri.ends_with('/') && status == StatusCode::NOT_FOUND;
        let documented = unrouted
            || std::panic::catch_unwind(|| assert_documented(&method, &uri, status, &json)).is_ok();
        if !documented {
            return Err(format!("status not in openapi.yaml: {}", said()));
        }

        if status.is_client_error() {
            let after = self
                .snapshot()
                .await
                .map_err(|e| format!("after {}, the caller's session broke: {e}", said()))?;
            if after != before {
                return Err(format!(
                    "a refused request changed data: {}\nbefore: {before:?}\nafter: {after:?}",
                    said()
                ));
            }
            let login = self.app.login(USER, PASSWORD).await;
            if login.status != StatusCode::CREATED {
                return Err(format!(
                    "after {}, login answers {} {}",
                    said(),
                    login.status,
                    login.body
                ));
            }
        } else {
            let victim = self.lists(&self.victim_token).await?;
            if victim != before.victim_lists {
                return Err(format!(
                    "{} changed another user's rows: {victim:?}",
                    said()
                ));
            }
            self.restore().await;
        }
        Ok(format!(
            "{} {}",
            status.as_u16(),
            json["message"].as_str().unwrap_or_default()
        ))
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

fn seed() -> u64 {
    match std::env::var("HOSTILE_SEED") {
        Ok(text) => {
            let text = text.trim();
            match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            }
            .expect("HOSTILE_SEED is a number")
        }
        Err(_) => rand::random(),
    }
}

fn case_count() -> usize {
    std::env::var("HOSTILE_CASES")
        .ok()
        .map(|n| n.parse().expect("HOSTILE_CASES is a number"))
        .unwrap_or(256)
}

/// Runs `cases` generated cases; on a failure shrinks it and panics with
/// the smallest failing case found and the seed that replays the run.
async fn run_property(app: TestApp, name: &str, strategy: BoxedStrategy<Case>) {
    let seed = seed();
    let cases = case_count();
    eprintln!("{name}: HOSTILE_SEED={seed:#x}, {cases} cases");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    let mut runner = TestRunner::new_with_rng(Config::default(), rng);
    let mut world = World::new(app).await;
    let started = Instant::now();
    let mut answers = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..cases {
        let mut tree = strategy.new_tree(&mut runner).expect("a case");
        let first = tree.current();
        let error = match world.check(&first).await {
            Ok(answer) => {
                *answers.entry(answer).or_default() += 1;
                continue;
            }
            Err(error) => error,
        };
        world.restore().await;
        let (mut smallest, mut why) = (first.clone(), error.clone());
        let mut steps = 0;
        let mut more = tree.simplify();
        while more && steps < 300 {
            steps += 1;
            let candidate = tree.current();
            match world.check(&candidate).await {
                Err(e) => {
                    world.restore().await;
                    (smallest, why) = (candidate, e);
                    more = tree.simplify();
                }
                Ok(_) => more = tree.complicate(),
            }
        }
        panic!(
            "{name}: case {i} of HOSTILE_SEED={seed:#x} failed: {error}\n  case: {first:?}\n\
             shrunk in {steps} steps to: {why}\n  case: {smallest:?}"
        );
    }
    eprintln!(
        "{name}: {cases} cases passed in {:?}; answers: {answers:?}",
        started.elapsed()
    );
}

#[every_backend]
async fn hostile_account_bodies_never_crash_and_refusals_change_nothing(app: TestApp) {
    run_property(app, "account bodies", account_cases()).await;
}

#[every_backend]
async fn hostile_push_token_bodies_never_crash_and_refusals_change_nothing(app: TestApp) {
    run_property(app, "push-token bodies", push_token_cases()).await;
}

#[every_backend]
async fn hostile_serials_never_crash_and_refusals_change_nothing(app: TestApp) {
    run_property(app, "serials", serial_cases()).await;
}

// ---------------------------------------------------------------------------
// Slow and oversized clients against the real binary
// ---------------------------------------------------------------------------

/// Reads until the server closes the connection; what it sent, or `None`
/// when it was still open after `limit`.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| received)
}

async fn healthy(server: &Server) {
    let (status, body) = server.call("GET", "/healthz", None, None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_client_that_stalls_in_its_request_head_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let mut half = TcpStream::connect(&server.address).await.unwrap();
    half.write_all(b"POST /v1/api/user/login HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    // Slowloris: one byte of the head every half second, never finishing.
    let mut trickle = TcpStream::connect(&server.address).await.unwrap();
    trickle
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .unwrap();
    let trickling = tokio::spawn(async move {
        for _ in 0..40 {
            if trickle.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        trickle
    });
    let started = Instant::now();
    let answer = closed_within(&mut half, Duration::from_secs(15))
        .await
        .expect("a stalled request head is cut off within 15 s");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(5),
        "cut off after {waited:?}, before the head timeout"
    );
    if !answer.is_empty() {
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    }
    let mut trickle = trickling.await.unwrap();
    let closed = closed_within(&mut trickle, Duration::from_secs(1)).await;
    assert!(
        closed.is_some(),
        "a head trickled byte by byte is cut off by the head timeout"
    );
    eprintln!("stalled head cut off after {waited:?}");
    healthy(&server).await;
    server.stop().await;
}

/// The head timeout's promise (`server.rs`: "a client that has not sent its
/// request head … by then is cut off") for clients that send nothing, or
/// only (part of) the HTTP/2 preface, and then wait.
#[tokio::test]
async fn a_client_that_sends_nothing_or_only_an_http2_preface_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let mut silent = Vec::new();
    for opening in [
        &b""[..],
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        stream.write_all(opening).await.unwrap();
        silent.push((opening.escape_ascii().to_string(), stream));
    }
    let started = Instant::now();
    let mut kept_open = Vec::new();
    for (opening, mut stream) in silent {
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        let closed = closed_within(&mut stream, left).await;
        eprintln!(
            "silent client {opening:?}: closed {} after {:?}",
            closed.is_some(),
            started.elapsed()
        );
        if closed.is_none() {
            kept_open.push(opening);
        }
    }
    healthy(&server).await;
    server.stop().await;
    assert!(
        kept_open.is_empty(),
        "clients that sent only these openings were still connected after 15 s: {kept_open:?}"
    );
}

#[tokio::test]
async fn a_huge_request_header_is_refused_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let big = |size: usize| {
        format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(size)
        )
    };
    let many: String = (0..5000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases = [
        ("a 200 KiB header", big(200 * 1024)),
        ("a 2 MiB header", big(2 * 1024 * 1024)),
        (
            "5000 small headers",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n"),
        ),
    ];
    let mut accepted = Vec::new();
    for (what, head) in cases {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        // The server may close before it has read everything: ignore EPIPE.
        let _ = stream.write_all(head.as_bytes()).await;
        let answer = closed_within(&mut stream, Duration::from_secs(15))
            .await
            .expect("the connection ends");
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .unwrap_or("closed")
            .to_owned();
        eprintln!("{what}: {status}");
        if !["431", "400", "closed"].contains(&status.as_str()) {
            accepted.push(format!("{what} answered {status}"));
        }
        // Whatever the answer, the server is still up.
        healthy(&server).await;
    }
    server.stop().await;
    assert!(
        accepted.is_empty(),
        "oversized heads were served: {accepted:?}"
    );
}

#[tokio::test]
async fn many_idle_connections_do_not_stop_a_normal_request() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&sqlite_in(dir.path())).await;
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut stream = TcpStream::connect(&server.address).await.unwrap();
        // Some say nothing, some stall in their head.
        if i % 2 == 0 {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
        }
        idle.push(stream);
    }
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        server.call("POST", SIGN_UP, None, Some(sign_up_body("alice_1"))),
    )
    .await
    .expect("served within 5 s beside 200 idle connections");
    assert_eq!(status, 201, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    healthy(&server).await;
    drop(idle);
    server.stop().await;
}
