//! The OpenAPI document the code generates, and the check every in-process
//! request makes against it: the status answered is one the document lists.

use std::sync::LazyLock;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

/// The document the code generates, as JSON.
pub static SPEC: LazyLock<Value> =
    LazyLock::new(|| serde_json::from_str(&pushtoken::http::openapi().to_json().unwrap()).unwrap());

/// The spec path template that `path` falls under, if any.
fn template_of(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    SPEC["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .find(|template| {
            let parts: Vec<&str> = template.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        })
}

/// Panics unless the document lists `status` for this request's operation
/// (or the answer is the JSON 404/405 of an unknown route or method).
pub fn assert_documented(method: &Method, uri: &str, status: StatusCode, body: &Value) {
    let path = uri.split('?').next().unwrap();
    let Some(template) = template_of(path) else {
        assert_eq!(
            (status, &body["message"]),
            (StatusCode::NOT_FOUND, &json!("not found")),
            "{method} {uri}"
        );
        return;
    };
    let operation = &SPEC["paths"][template][method.as_str().to_lowercase()];
    if operation.is_null() {
        let answer = (status, &body["message"]);
        assert_eq!(
            answer,
            (StatusCode::METHOD_NOT_ALLOWED, &json!("method not allowed")),
            "{method} {uri}"
        );
        return;
    }
    assert!(
        operation["responses"].get(status.as_str()).is_some(),
        "{method} {template} answered {status} {body}, which openapi.yaml does not list"
    );
}
