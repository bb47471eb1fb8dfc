//! The generated cases: a request to one route, its authentication, body
//! and headers, drawn from strategies aimed at the routes' validators.

use std::fmt;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::BoxedStrategy;
use serde_json::{json, Map, Value};

use crate::support::api::{push_token, API_KEY, PASSWORD};
use crate::support::push_tokens::FIELDS;

/// Stand-ins replaced, when a case is sent, by the caller's live secrets.
pub const TOKEN: &str = "<<TOKEN>>";
pub const REFLASH: &str = "<<REFLASH>>";
/// The caller's username.
pub const USER: &str = "hostile_1";
/// Another user, whose rows nothing the caller sends may touch.
pub const VICTIM: &str = "victim_1";

const SIGN_UP_FIELDS: &[&str] = &[
    "username", "password", "apikey", "email", "phone", "realm", "code",
];
const LOGIN_FIELDS: &[&str] = &["username", "password"];
const LOGOUT_FIELDS: &[&str] = &["username", "token"];
const REFRESH_FIELDS: &[&str] = &["reflash_key"];
const PUSH_FIELDS: &[&str] = &FIELDS;

#[derive(Clone, Debug)]
pub enum Target {
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
pub enum Auth {
    /// `token: <the caller's session>`.
    Token,
    /// `Authorization: Bearer <the caller's session>`.
    Bearer,
    None,
    /// `token: <this>`.
    Forged(String),
}

#[derive(Clone)]
pub struct Case {
    pub target: Target,
    pub auth: Auth,
    pub body: Vec<u8>,
    pub bundleid: Option<Vec<u8>>,
    pub content_type: Option<&'static str>,
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

pub fn percent_encode(text: &str) -> String {
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
pub fn account_cases() -> BoxedStrategy<Case> {
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
pub fn push_token_cases() -> BoxedStrategy<Case> {
    let target = prop_oneof![
        (0usize..2).prop_map(Target::Post),
        (0usize..2, 0i64..5).prop_map(|(f, s)| Target::Put(f, s.to_string())),
    ];
    case(target.boxed(), body(PUSH_FIELDS, push_base()))
}

/// `PUT` and `DELETE` of both families at hostile serials.
pub fn serial_cases() -> BoxedStrategy<Case> {
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
