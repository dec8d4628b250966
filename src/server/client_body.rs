//! A client's request body, whichever protocol brought it: tokentap's own HTTP/1.1 server, or
//! hyper's h2c.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::http1::RequestBody;
use crate::wire::lines::HeadLines;

pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
pub enum ClientBody {
    Http1(RequestBody),
    Http2(Incoming),
}

impl ClientBody {
    /// The request's header lines as they came, when its connection kept them so (its header
    /// map is then empty): only the first call has them.
    pub fn take_head_lines(&mut self) -> Option<HeadLines> {
        match self {
            ClientBody::Http1(body) => body.take_head_lines(),
            ClientBody::Http2(_) => None,
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            ClientBody::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            ClientBody::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Http1(body) => body.is_end_stream(),
            ClientBody::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Http1(body) => body.size_hint(),
            ClientBody::Http2(body) => body.size_hint(),
        }
    }
}
