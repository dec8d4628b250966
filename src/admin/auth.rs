//! The admin token: `Authorization: Bearer TOKEN`, or `?token=TOKEN` for what a browser's
//! EventSource and address bar cannot send headers for. Compared in constant time.

use crate::server::ClientBody;
use http::{HeaderValue, Request, Response, header};

use super::{AdminBody, error};
use crate::app::App;

pub fn admin_allowed(app: &App, req: &Request<ClientBody>) -> bool {
    app.settings()
        .admin_token
        .as_deref()
        .is_none_or(|token| presents(req, token))
}

/// `/metrics` takes the metrics token or the admin token, and is open when neither is set.
pub fn metrics_allowed(app: &App, req: &Request<ClientBody>) -> bool {
    let s = app.settings();
    let tokens = [s.metrics_token.as_deref(), s.admin_token.as_deref()];
    tokens.iter().all(Option::is_none) || tokens.iter().flatten().any(|t| presents(req, t))
}

fn presents(req: &Request<ClientBody>, token: &str) -> bool {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = req.uri().query().and_then(|q| {
        super::query::pairs(q)
            .into_iter()
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v)
    });
    header.is_some_and(|h| constant_time_eq(h.as_bytes(), token.as_bytes()))
        || query.is_some_and(|q| constant_time_eq(q.as_bytes(), token.as_bytes()))
}

pub fn unauthorized() -> Response<AdminBody> {
    let mut response = error(http::StatusCode::UNAUTHORIZED, "missing or wrong token");
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares without an early exit, so timing does not reveal how much of the token matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_tokens() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
