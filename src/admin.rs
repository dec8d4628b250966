//! The admin listener: health, readiness, and the JSON API over the tracker. Every route but
//! the two probes needs the admin token when one is set.

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;

use crate::app::App;

pub type AdminBody = Full<Bytes>;

pub async fn handle(app: App, req: Request<Incoming>) -> Response<AdminBody> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") if app.is_draining() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining")
        }
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/metrics") => metrics(&app, &req),
        _ if !authorized(&app, &req) => unauthorized(),
        (&Method::GET, "/api/active") => json(
            StatusCode::OK,
            &serde_json::json!({ "active": app.tracker().active() }),
        ),
        (&Method::GET, "/api/requests") => list_requests(&app, &query),
        (&Method::GET, p) if p.starts_with("/api/requests/") => {
            let id = &p["/api/requests/".len()..];
            match app.tracker().get(id) {
                Some(record) => json(StatusCode::OK, &*record),
                None => error(StatusCode::NOT_FOUND, &format!("no request with id `{id}`")),
            }
        }
        (&Method::GET, "/api/counts") => json(StatusCode::OK, &app.tracker().counts()),
        (_, p) if known_route(p) => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        _ => error(StatusCode::NOT_FOUND, "no such admin route"),
    }
}

/// `/metrics`: open unless a metrics or admin token is set; either token is accepted.
fn metrics(app: &App, req: &Request<Incoming>) -> Response<AdminBody> {
    let settings = app.settings();
    let tokens = [
        settings.metrics_token.as_deref(),
        settings.admin_token.as_deref(),
    ];
    if tokens.iter().any(Option::is_some)
        && !tokens.iter().flatten().any(|t| bearer_matches(req, t))
    {
        return unauthorized();
    }
    match app.tracker().metrics().render() {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render metrics: {err}"),
        ),
    }
}

fn unauthorized() -> Response<AdminBody> {
    let mut response = error(StatusCode::UNAUTHORIZED, "missing or wrong token");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn known_route(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/metrics" | "/api/active" | "/api/requests" | "/api/counts"
    ) || path.starts_with("/api/requests/")
}

fn list_requests(app: &App, query: &str) -> Response<AdminBody> {
    let mut limit = 100usize;
    let mut offset = 0usize;
    for (key, value) in form_pairs(query) {
        let parsed = value.parse::<usize>();
        match (key.as_str(), parsed) {
            ("limit", Ok(n)) if (1..=10_000).contains(&n) => limit = n,
            ("offset", Ok(n)) => offset = n,
            ("limit" | "offset", _) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "`{key}` must be a whole number{}",
                        if key == "limit" {
                            " from 1 to 10000"
                        } else {
                            ""
                        }
                    ),
                );
            }
            _ => {}
        }
    }
    let records = app.tracker().recent();
    let total = records.len();
    let page: Vec<_> = records.into_iter().skip(offset).take(limit).collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "requests": page, "total": total, "limit": limit, "offset": offset }),
    )
}

/// `a=1&b=x%20y` as decoded pairs.
pub fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn authorized(app: &App, req: &Request<Incoming>) -> bool {
    app.settings()
        .admin_token
        .as_deref()
        .is_none_or(|token| bearer_matches(req, token))
}

fn bearer_matches(req: &Request<Incoming>, token: &str) -> bool {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without an early exit, so timing does not reveal how much of the token matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<AdminBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot serialise: {err}"),
        ),
    }
}

pub fn error(status: StatusCode, message: &str) -> Response<AdminBody> {
    let body = serde_json::json!({"error": {"message": message, "type": "admin_error", "code": status.as_u16()}});
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_queries_and_compares_tokens() {
        assert_eq!(
            form_pairs("a=1&b=x%20y+z&c"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y z".into()),
                ("c".into(), String::new())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
