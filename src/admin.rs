//! The admin listener: probes, metrics, the JSON API over the tracker, the live feed and the
//! dashboard page. Every route but the two probes needs the admin token when one is set.

mod api;
mod auth;
mod export;
mod live;
mod query;

use std::convert::Infallible;

use crate::server::ClientBody;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

use crate::app::App;
pub use query::{BadParam, wildcard};

pub type AdminBody = UnsyncBoxBody<Bytes, Infallible>;

/// The live feed and every other admin answer are fed by other tasks, or are whole.
impl crate::server::WriterHints for AdminBody {}

const DASHBOARD: &str = include_str!("admin/dashboard.html");

pub async fn handle(app: App, req: Request<ClientBody>) -> Response<AdminBody> {
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            "the admin API is read-only: use GET",
        );
    }
    match path {
        "/healthz" => return text(StatusCode::OK, "ok"),
        "/readyz" if app.is_draining() => return text(StatusCode::SERVICE_UNAVAILABLE, "draining"),
        "/readyz" => return text(StatusCode::OK, "ok"),
        "/metrics" => return metrics(&app, &req),
        _ => {}
    }
    if !auth::admin_allowed(&app, &req) {
        return auth::unauthorized();
    }
    let result = match path {
        "/" => Ok(html(DASHBOARD)),
        "/api/active" => Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "active": app.tracker().active() }),
        )),
        "/api/active/stream" => live::stream(&app),
        "/api/requests" => api::requests(&app, query),
        "/api/totals" => api::totals(&app, query),
        "/api/timeseries" => api::timeseries(&app, query),
        "/api/export" => export::export(&app, query),
        "/api/counts" => Ok(json(StatusCode::OK, &app.tracker().counts())),
        p => match (
            p.strip_prefix("/api/requests/"),
            p.strip_prefix("/api/conversations/"),
        ) {
            (Some(id), _) => Ok(api::request(&app, id)),
            (_, Some(id)) => api::conversation(&app, id),
            _ => Ok(error(StatusCode::NOT_FOUND, "no such admin route")),
        },
    };
    result.unwrap_or_else(|bad| error(StatusCode::BAD_REQUEST, &bad.to_string()))
}

/// `/metrics`: open unless a metrics or admin token is set; either token is accepted.
fn metrics(app: &App, req: &Request<ClientBody>) -> Response<AdminBody> {
    if !auth::metrics_allowed(app, req) {
        return auth::unauthorized();
    }
    match app.tracker().metrics().render() {
        Ok(body) => with_type(
            Response::new(full(body)),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        Err(err) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot render metrics: {err}"),
        ),
    }
}

pub fn full(body: impl Into<Bytes>) -> AdminBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn with_type(mut response: Response<AdminBody>, content_type: &'static str) -> Response<AdminBody> {
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<AdminBody> {
    let mut response = with_type(Response::new(full(body)), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

fn html(body: &'static str) -> Response<AdminBody> {
    let mut response = with_type(Response::new(full(body)), "text/html; charset=utf-8");
    // The page loads nothing from elsewhere; say so to the browser.
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
        ),
    );
    response
}

pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<AdminBody> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut response = with_type(Response::new(full(body)), "application/json");
            *response.status_mut() = status;
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
    let mut response = with_type(Response::new(full(body.to_string())), "application/json");
    *response.status_mut() = status;
    response
}
