//! The request body as the request path sees it, whichever server speaks to the client:
//! lb's own HTTP/1 codec ([`H1Body`], fed by the connection loop) or hyper's HTTP/2
//! server (`Incoming`).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body, Frame, Incoming, SizeHint};

#[derive(Debug, thiserror::Error)]
pub enum ReqBodyError {
    #[error("{0}")]
    Hyper(hyper::Error),
    #[error("malformed chunked body: {0}")]
    Chunked(crate::l7::upstream::codec::CodecError),
    #[error("the client closed the connection before the end of the body")]
    Closed,
}

/// A client's request body.
#[derive(Debug)]
pub enum ReqBody {
    /// No body.
    Empty,
    /// From lb's HTTP/1 connection loop.
    H1(H1Body),
    /// From hyper's server (HTTP/2, and HTTP/1 connections whose protocol is detected).
    Hyper(Incoming),
}

impl Body for ReqBody {
    type Data = Bytes;
    type Error = ReqBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReqBodyError>>> {
        match self.get_mut() {
            ReqBody::Empty => Poll::Ready(None),
            ReqBody::H1(b) => b.poll_frame(cx),
            ReqBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(ReqBodyError::Hyper),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ReqBody::Empty => true,
            ReqBody::H1(b) => b.is_end_stream(),
            ReqBody::Hyper(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ReqBody::Empty => SizeHint::with_exact(0),
            ReqBody::H1(b) => b.size_hint(),
            ReqBody::Hyper(b) => b.size_hint(),
        }
    }
}

/// What the connection loop hands the body, one piece at a time.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    Trailers(HeaderMap),
    Error(ReqBodyError),
}

/// The one-piece hand-over between the connection loop and the body.
#[derive(Debug, Default)]
struct Slot {
    piece: Option<Piece>,
    /// No more pieces will come.
    ended: bool,
    /// The body asked for a piece and none was there.
    wanted: bool,
    /// The body was dropped: nothing more is read for it.
    dropped: bool,
    body_waker: Option<Waker>,
    loop_waker: Option<Waker>,
}

/// An HTTP/1 request body, fed by the connection loop as the request path reads it (the
/// loop reads from the client only when a piece is asked for).
#[derive(Debug)]
pub struct H1Body {
    slot: Arc<Mutex<Slot>>,
    /// Content-Length bytes still to come (`None`: chunked).
    remaining: Option<u64>,
}

/// The connection loop's end of an [`H1Body`].
#[derive(Debug)]
pub struct BodyTx {
    slot: Arc<Mutex<Slot>>,
}

/// A body and the sender that feeds it; `length`: the Content-Length, if any.
pub fn channel(length: Option<u64>) -> (H1Body, BodyTx) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (
        H1Body {
            slot: slot.clone(),
            remaining: length,
        },
        BodyTx { slot },
    )
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    match slot.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl H1Body {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReqBodyError>>> {
        let mut s = lock(&self.slot);
        match s.piece.take() {
            Some(p) => {
                if let Some(w) = s.loop_waker.take() {
                    w.wake();
                }
                drop(s);
                Poll::Ready(Some(match p {
                    Piece::Data(d) => {
                        if let Some(r) = &mut self.remaining {
                            *r = r.saturating_sub(d.len() as u64);
                        }
                        Ok(Frame::data(d))
                    }
                    Piece::Trailers(t) => Ok(Frame::trailers(t)),
                    Piece::Error(e) => Err(e),
                }))
            }
            None if s.ended => Poll::Ready(None),
            None => {
                s.wanted = true;
                match &s.body_waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => s.body_waker = Some(cx.waker().clone()),
                }
                if let Some(w) = s.loop_waker.take() {
                    w.wake();
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let s = lock(&self.slot);
        s.ended && s.piece.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::new(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        let mut s = lock(&self.slot);
        s.dropped = true;
        if let Some(w) = s.loop_waker.take() {
            w.wake();
        }
    }
}

/// What the body wants from the loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Want {
    /// A piece (the slot is empty and the body asked).
    Piece,
    /// The body is gone: stop reading it.
    Dropped,
}

impl BodyTx {
    /// Ready when the body asks for a piece (or is gone).
    pub fn poll_want(&self, cx: &mut Context<'_>) -> Poll<Want> {
        let mut s = lock(&self.slot);
        if s.dropped {
            return Poll::Ready(Want::Dropped);
        }
        if s.wanted && s.piece.is_none() {
            return Poll::Ready(Want::Piece);
        }
        match &s.loop_waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => s.loop_waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Hands over a piece; `last`: nothing comes after it.
    pub fn send(&self, piece: Option<Piece>, last: bool) {
        let mut s = lock(&self.slot);
        s.wanted = false;
        s.piece = piece;
        s.ended |= last;
        if let Some(w) = s.body_waker.take() {
            w.wake();
        }
    }

    /// Whether the body was dropped.
    pub fn dropped(&self) -> bool {
        lock(&self.slot).dropped
    }
}
