//! What a connection has to write, in order: answer heads, chunk framing and small pieces of
//! data copied into one buffer, large data kept as it came. It goes out in one vectored write
//! when the socket takes it all.
//!
//! A stream's events are a few hundred bytes each: copied next to their chunk framing, a
//! stream's chunks that arrive together leave as one slice, where a slice for every size line,
//! piece of data and line break (hyper's queue) made the writes and their bookkeeping cost more
//! than the copies.

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};

/// Data up to this size is copied; larger data is written from where it is.
const COPY_MAX: usize = 4 * 1024;
/// Most slices given to one write.
const MAX_SLICES: usize = 32;
/// A copy buffer grown past this by one large answer is let go once written.
const KEEP_CAPACITY: usize = 64 * 1024;

#[derive(Default)]
pub struct Outbox {
    copied: BytesMut,
    parts: Vec<Part>,
    /// Unwritten bytes in all.
    len: usize,
}

enum Part {
    /// The next this many bytes of `copied`.
    Copied(usize),
    Data(Bytes),
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes to write, copied.
    pub fn put(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.copied.extend_from_slice(bytes);
        self.len += bytes.len();
        match self.parts.last_mut() {
            Some(Part::Copied(n)) => *n += bytes.len(),
            _ => self.parts.push(Part::Copied(bytes.len())),
        }
    }

    /// Data to write: copied when small, else kept as it is.
    pub fn put_data(&mut self, data: Bytes) {
        if data.len() <= COPY_MAX {
            self.put(&data);
        } else {
            self.len += data.len();
            self.parts.push(Part::Data(data));
        }
    }

    /// One piece of a chunked body: its size line, the data, its line break.
    pub fn put_chunk(&mut self, data: Bytes) {
        if data.is_empty() {
            // An empty chunk would end the body.
            return;
        }
        let mut line = [0u8; 18];
        let size = hex(data.len(), &mut line);
        self.put(size);
        self.put_data(data);
        self.put(b"\r\n");
    }

    /// The unwritten bytes as slices, in order, as many as fit in `slices`.
    pub fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>; MAX_SLICES]) -> usize {
        let mut at = 0;
        let mut count = 0;
        for part in &self.parts {
            if count == MAX_SLICES {
                break;
            }
            let bytes = match part {
                Part::Copied(n) => {
                    at += n;
                    &self.copied[at - n..at]
                }
                Part::Data(data) => &data[..],
            };
            slices[count] = IoSlice::new(bytes);
            count += 1;
        }
        count
    }

    /// Takes `n` written bytes off the front.
    pub fn advance(&mut self, mut n: usize) {
        self.len -= n;
        if self.len == 0 {
            self.parts.clear();
            if self.copied.capacity() > KEEP_CAPACITY {
                self.copied = BytesMut::new();
            } else {
                self.copied.clear();
            }
            return;
        }
        let mut done = 0;
        for part in &mut self.parts {
            let size = match part {
                Part::Copied(size) => *size,
                Part::Data(data) => data.len(),
            };
            if n < size {
                match part {
                    Part::Copied(left) => {
                        *left -= n;
                        self.copied.advance(n);
                    }
                    Part::Data(data) => data.advance(n),
                }
                break;
            }
            n -= size;
            if let Part::Copied(_) = part {
                self.copied.advance(size);
            }
            done += 1;
            if n == 0 {
                break;
            }
        }
        self.parts.drain(..done);
    }
}

/// `n` in hexadecimal, then a line break: a chunk's size line.
fn hex(mut n: usize, line: &mut [u8; 18]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut at = line.len() - 2;
    line[at..].copy_from_slice(b"\r\n");
    loop {
        at -= 1;
        line[at] = DIGITS[n & 15];
        n >>= 4;
        if n == 0 {
            return &line[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwritten(out: &Outbox) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let count = out.slices(&mut slices);
        slices[..count].iter().flat_map(|s| s.to_vec()).collect()
    }

    #[test]
    fn size_lines_are_lowercase_hex() {
        assert_eq!(hex(0, &mut [0; 18]), b"0\r\n");
        assert_eq!(hex(255, &mut [0; 18]), b"ff\r\n");
        assert_eq!(hex(0x1a2b, &mut [0; 18]), b"1a2b\r\n");
        assert_eq!(hex(usize::MAX, &mut [0; 18]), b"ffffffffffffffff\r\n");
    }

    #[test]
    fn chunks_small_and_large_go_out_in_order_whatever_each_write_takes() {
        let large = Bytes::from(vec![b'L'; COPY_MAX + 1]);
        let mut expected = b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n".to_vec();
        expected.extend_from_slice(b"1001\r\n");
        expected.extend_from_slice(&large);
        expected.extend_from_slice(b"\r\n0\r\n\r\n");
        for step in [1, 3, 7, 100, 5000, expected.len()] {
            let mut out = Outbox::default();
            out.put(b"HTTP/1.1 200 OK\r\n\r\n");
            out.put_chunk(Bytes::from_static(b"hello"));
            out.put_chunk(Bytes::new());
            out.put_chunk(large.clone());
            out.put(b"0\r\n\r\n");
            assert_eq!(out.len(), expected.len());
            let mut written = Vec::new();
            while !out.is_empty() {
                let pending = unwritten(&out);
                let n = step.min(pending.len());
                written.extend_from_slice(&pending[..n]);
                out.advance(n);
            }
            assert_eq!(written, expected, "writes of {step}");
            // Emptied, it takes the next answer from the start.
            out.put(b"next");
            assert_eq!(unwritten(&out), b"next");
        }
    }

    #[test]
    fn small_pieces_in_a_row_are_one_slice() {
        let mut out = Outbox::default();
        out.put(b"head");
        out.put_chunk(Bytes::from_static(b"a"));
        out.put_chunk(Bytes::from_static(b"b"));
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        assert_eq!(out.slices(&mut slices), 1);
        assert_eq!(&*slices[0], b"head1\r\na\r\n1\r\nb\r\n");
    }
}
