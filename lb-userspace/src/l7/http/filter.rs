//! Body filters: adaptors over a response body toward the client, each seeing the bytes
//! the one before it gave. The cache's store (a tee) and compression are filters; the
//! response body runs its chain chunk by chunk ([`Chain`]), so nothing is buffered here.

use bytes::{Bytes, BytesMut};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("compressing the response body: {0}")]
    Compress(std::io::Error),
}

/// One filter over a body.
pub trait BodyFilter: Send + Sync {
    /// One chunk of the body in, what goes on out (may be empty).
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError>;
    /// The body ended (or its trailers come): the last bytes.
    fn end(&mut self) -> Result<Bytes, FilterError>;
    /// The output is the input, byte for byte (the body keeps its length).
    fn keeps_length(&self) -> bool {
        false
    }
}

/// The filters of one response, in order.
#[derive(Default)]
pub struct Chain {
    list: Vec<Box<dyn BodyFilter>>,
    ended: bool,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chain")
            .field("filters", &self.list.len())
            .field("ended", &self.ended)
            .finish()
    }
}

impl Chain {
    pub fn push(&mut self, f: Box<dyn BodyFilter>) {
        self.list.push(f);
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Every filter passes bytes through unchanged.
    pub fn keeps_length(&self) -> bool {
        self.list.iter().all(|f| f.keeps_length())
    }

    /// Whether [`Chain::end`] ran.
    pub fn ended(&self) -> bool {
        self.ended || self.list.is_empty()
    }

    pub fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError> {
        let mut b = chunk;
        for f in &mut self.list {
            b = f.data(b)?;
        }
        Ok(b)
    }

    /// The end of the body: each filter's last bytes go through the filters after it.
    pub fn end(&mut self) -> Result<Bytes, FilterError> {
        if self.ended {
            return Ok(Bytes::new());
        }
        self.ended = true;
        let mut carried = Bytes::new();
        for f in &mut self.list {
            let mut out = BytesMut::new();
            if !carried.is_empty() {
                out.extend_from_slice(&f.data(carried)?);
            }
            out.extend_from_slice(&f.end()?);
            carried = out.freeze();
        }
        Ok(carried)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upper-cases, and says `!` at the end.
    struct Shout;
    impl BodyFilter for Shout {
        fn data(&mut self, c: Bytes) -> Result<Bytes, FilterError> {
            Ok(Bytes::from(c.to_ascii_uppercase()))
        }
        fn end(&mut self) -> Result<Bytes, FilterError> {
            Ok(Bytes::from_static(b"!"))
        }
    }
    /// Holds everything until the end.
    struct Hold(Vec<u8>);
    impl BodyFilter for Hold {
        fn data(&mut self, c: Bytes) -> Result<Bytes, FilterError> {
            self.0.extend_from_slice(&c);
            Ok(Bytes::new())
        }
        fn end(&mut self) -> Result<Bytes, FilterError> {
            Ok(Bytes::from(std::mem::take(&mut self.0)))
        }
    }

    #[test]
    fn filters_run_in_order_and_end_flows_through() {
        let mut c = Chain::default();
        c.push(Box::new(Shout));
        c.push(Box::new(Hold(Vec::new())));
        assert!(!c.keeps_length());
        assert_eq!(c.data(Bytes::from_static(b"ab")).expect("d"), "");
        assert_eq!(c.data(Bytes::from_static(b"c")).expect("d"), "");
        assert_eq!(c.end().expect("e"), "ABC!");
        assert!(c.ended());
        assert_eq!(c.end().expect("e"), "");
    }
}
