//! The request size limit of the `weir.v1.Weir` service: a request message over
//! `max_request_bytes` is refused with a weir reason, before a byte of it is buffered.
//!
//! tonic enforces `max_decoding_message_size` itself, but answers `OUT_OF_RANGE` with its own
//! message and no weir reason: the status code of OFFSET_OUT_OF_RANGE, so a client that maps
//! codes misreads it, and a unary call's refusal never reaches a handler that could say better.
//! So [`RequestLimit`] wraps the service and reads the gRPC framing of each request body as it
//! arrives (a 5-byte prefix per message: a compression flag and a big-endian u32 length). The
//! first prefix announcing more than the limit ends the body with the refusal
//! [`crate::wire::errors::request_too_large`] builds, as a [`Status`]; tonic hands a body's
//! `Status` on unchanged (code, message, details and metadata), so a unary call is answered with
//! it and a `ProduceStream` handler reads it as its stream's error. The prefix is checked when it
//! arrives, so the oversized message is never held in memory; tonic's own limit, set to the same
//! value, stays as the backstop.
//!
//! Cost: a few comparisons per body chunk, no copy and no allocation beyond boxing the body
//! once per call.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;
use tonic::server::NamedService;
use tower_service::Service;
use weir_proto::v1::weir_server::SERVICE_NAME;

use crate::wire::errors::{request_too_large, to_status};

/// The bytes of a gRPC message prefix: compression flag, then the length.
const PREFIX: usize = 5;

/// The `weir.v1.Weir` method a request calls (`/weir.v1.Weir/Produce` -> `Produce`), or
/// `None` for another service's path.
pub(super) fn weir_method(uri: &http::Uri) -> Option<&str> {
    uri.path()
        .strip_prefix('/')
        .and_then(|path| path.strip_prefix(SERVICE_NAME))
        .and_then(|path| path.strip_prefix('/'))
}

/// A gRPC service whose request messages may be at most `limit` bytes.
#[derive(Clone)]
pub struct RequestLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> RequestLimit<S> {
    pub fn new(inner: S, limit: u64) -> Self {
        RequestLimit {
            inner,
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
        }
    }
}

impl<S: NamedService> NamedService for RequestLimit<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for RequestLimit<S>
where
    S: Service<http::Request<Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let method = weir_method(request.uri());
        let produce = matches!(method, Some("Produce" | "ProduceStream"));
        let limit = self.limit;
        self.inner.call(request.map(|body| {
            Body::new(LimitedBody {
                inner: body,
                framing: Framing::new(limit),
                produce,
                refusal: None,
                refused: false,
            })
        }))
    }
}

/// Where the request body is in the gRPC framing.
#[derive(Debug)]
struct Framing {
    limit: usize,
    /// The prefix of the next message, as far as it has arrived.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// Bytes of the current message still to come.
    remaining: usize,
}

impl Framing {
    fn new(limit: usize) -> Self {
        Framing {
            limit,
            prefix: [0; PREFIX],
            prefix_len: 0,
            remaining: 0,
        }
    }

    /// Follows the framing through `chunk`. Finding a message announced over the limit, returns
    /// its length and where in `chunk` its prefix begins (0 if it began in an earlier chunk):
    /// the bytes before that are whole or partial earlier messages, to be passed on.
    fn scan(&mut self, chunk: &[u8]) -> Result<(), TooLarge> {
        let mut at = 0;
        while at < chunk.len() {
            if self.remaining > 0 {
                let n = self.remaining.min(chunk.len() - at);
                self.remaining -= n;
                at += n;
                continue;
            }
            let prefix_start = at.saturating_sub(self.prefix_len);
            let n = (PREFIX - self.prefix_len).min(chunk.len() - at);
            self.prefix[self.prefix_len..self.prefix_len + n].copy_from_slice(&chunk[at..at + n]);
            self.prefix_len += n;
            at += n;
            if self.prefix_len == PREFIX {
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > self.limit {
                    return Err(TooLarge { len, prefix_start });
                }
                self.remaining = len;
            }
        }
        Ok(())
    }
}

/// A message over the limit, found by [`Framing::scan`].
#[derive(Debug, PartialEq, Eq)]
struct TooLarge {
    len: usize,
    prefix_start: usize,
}

/// A request body that ends with the refusal at the first message over the limit.
struct LimitedBody {
    inner: Body,
    framing: Framing,
    /// Whether the call is Produce or ProduceStream, which decides the refusal's reason.
    produce: bool,
    /// The refusal, once found; sent after the bytes of the messages before it.
    refusal: Option<Status>,
    refused: bool,
}

impl http_body::Body for LimitedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Some(refusal) = this.refusal.take() {
            this.refused = true;
            return Poll::Ready(Some(Err(refusal)));
        }
        if this.refused {
            return Poll::Ready(None);
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let Err(too_large) = this.framing.scan(data) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let refusal = to_status(request_too_large(
            this.produce,
            too_large.len,
            this.framing.limit,
        ));
        if too_large.prefix_start == 0 {
            this.refused = true;
            return Poll::Ready(Some(Err(refusal)));
        }
        // The messages before it in this chunk are answered as usual (a ProduceStream's
        // earlier batches are appended and acknowledged); the refusal comes next.
        let before = data.slice(..too_large.prefix_start);
        this.refusal = Some(refusal);
        Poll::Ready(Some(Ok(Frame::data(before))))
    }

    fn is_end_stream(&self) -> bool {
        self.refusal.is_none() && (self.refused || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(len: u32) -> Vec<u8> {
        let mut p = vec![0u8];
        p.extend_from_slice(&len.to_be_bytes());
        p
    }

    #[test]
    fn follows_messages_across_chunks_and_stops_at_the_first_too_large() {
        let mut framing = Framing::new(10);
        // A 10-byte message (at the limit) split mid-prefix and mid-body.
        let mut bytes = prefix(10);
        bytes.extend_from_slice(&[7; 10]);
        bytes.extend(prefix(0));
        bytes.extend(prefix(11));
        for chunk in [&bytes[..3], &bytes[3..9], &bytes[9..15], &bytes[15..22]] {
            assert_eq!(framing.scan(chunk), Ok(()));
        }
        // The oversized prefix began 2 bytes before this chunk.
        let too_large = TooLarge {
            len: 11,
            prefix_start: 0,
        };
        assert_eq!(framing.scan(&bytes[22..]), Err(too_large));
    }

    #[test]
    fn the_messages_before_a_too_large_one_in_the_same_chunk_are_passed_on() {
        let mut framing = Framing::new(10);
        let mut bytes = prefix(3);
        bytes.extend_from_slice(b"abc");
        bytes.extend(prefix(11));
        let too_large = TooLarge {
            len: 11,
            prefix_start: 8,
        };
        assert_eq!(framing.scan(&bytes), Err(too_large));
    }

    #[test]
    fn a_prefix_over_the_limit_is_refused_before_its_message_arrives() {
        let mut framing = Framing::new(1 << 20);
        let too_large = TooLarge {
            len: u32::MAX as usize,
            prefix_start: 0,
        };
        assert_eq!(framing.scan(&prefix(u32::MAX)), Err(too_large));
    }
}
