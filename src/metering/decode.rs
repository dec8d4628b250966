//! Decodes a compressed body for the meter's copy only; the client gets the bytes as sent.
//! Output is capped, so a decompression bomb costs the meter nothing but a parse error.

use std::io::Write;

/// The most decoded bytes the meter reads from one response.
const MAX_DECODED: u64 = 256 << 20;

pub enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>, u64),
    Deflate(flate2::write::ZlibDecoder<Vec<u8>>, u64),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>, u64),
    Zstd(zstd::stream::write::Decoder<'static, Vec<u8>>, u64),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("corrupt compressed body: {0}")]
    Corrupt(#[from] std::io::Error),
    #[error("decoded body exceeds {MAX_DECODED} bytes")]
    TooLarge,
}

impl Decoder {
    /// A decoder for a `Content-Encoding`; `None` for identity or an encoding it does not know
    /// (the meter then sees the bytes as they are).
    ///
    /// Never inlined: making a gzip decoder takes a 52 KiB stack frame (flate2's
    /// `GzDecoder::new`), and inlined into the request handler's future it made every poll of
    /// it, compressed answer or not, probe thirteen pages of stack.
    #[inline(never)]
    pub fn for_encoding(encoding: &str) -> Option<Decoder> {
        match encoding.trim().to_ascii_lowercase().as_str() {
            "gzip" | "x-gzip" => Some(Decoder::Gzip(
                flate2::write::MultiGzDecoder::new(Vec::new()),
                0,
            )),
            "deflate" => Some(Decoder::Deflate(
                flate2::write::ZlibDecoder::new(Vec::new()),
                0,
            )),
            "br" => Some(Decoder::Brotli(
                Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096)),
                0,
            )),
            "zstd" => zstd::stream::write::Decoder::new(Vec::new())
                .ok()
                .map(|d| Decoder::Zstd(d, 0)),
            _ => None,
        }
    }

    /// Decodes one chunk; the returned buffer holds what it produced (take it, then `recycle`).
    pub fn decode(&mut self, chunk: &[u8]) -> Result<&mut Vec<u8>, DecodeError> {
        let (out, total) = match self {
            Decoder::Gzip(d, total) => {
                d.write_all(chunk)?;
                d.flush()?;
                (d.get_mut(), total)
            }
            Decoder::Deflate(d, total) => {
                d.write_all(chunk)?;
                d.flush()?;
                (d.get_mut(), total)
            }
            Decoder::Brotli(d, total) => {
                d.write_all(chunk)?;
                d.flush()?;
                (d.get_mut(), total)
            }
            Decoder::Zstd(d, total) => {
                d.write_all(chunk)?;
                d.flush()?;
                (d.get_mut(), total)
            }
        };
        *total += out.len() as u64;
        if *total > MAX_DECODED {
            out.clear();
            return Err(DecodeError::TooLarge);
        }
        Ok(out)
    }

    /// Gives a drained output buffer back, so its capacity is reused.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        buffer.clear();
        let out = match self {
            Decoder::Gzip(d, _) => d.get_mut(),
            Decoder::Deflate(d, _) => d.get_mut(),
            Decoder::Brotli(d, _) => d.get_mut(),
            Decoder::Zstd(d, _) => d.get_mut(),
        };
        if out.is_empty() {
            *out = buffer;
        }
    }

    /// The body ended: whatever the decoder still held.
    pub fn finish(&mut self) -> Result<&mut Vec<u8>, DecodeError> {
        match self {
            Decoder::Gzip(d, _) => d.try_finish()?,
            Decoder::Deflate(d, _) => d.try_finish()?,
            Decoder::Brotli(d, _) => d.flush()?,
            Decoder::Zstd(d, _) => d.flush()?,
        }
        Ok(match self {
            Decoder::Gzip(d, _) => d.get_mut(),
            Decoder::Deflate(d, _) => d.get_mut(),
            Decoder::Brotli(d, _) => d.get_mut(),
            Decoder::Zstd(d, _) => d.get_mut(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(encoding: &str, compressed: &[u8], expect: &[u8]) {
        let mut decoder = Decoder::for_encoding(encoding).expect("known encoding");
        let mut got = Vec::new();
        for piece in compressed.chunks(7) {
            got.extend_from_slice(&std::mem::take(decoder.decode(piece).expect("decodes")));
        }
        got.extend_from_slice(decoder.finish().expect("finishes"));
        assert_eq!(got, expect, "{encoding}");
    }

    #[test]
    fn decodes_every_encoding_in_pieces() {
        let plain = b"data: {\"usage\":{\"prompt_tokens\":3}}\n\n".repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&plain).expect("write");
        roundtrip("gzip", &gz.finish().expect("gzip"), &plain);
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(&plain).expect("write");
        roundtrip("deflate", &zl.finish().expect("zlib"), &plain);
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(&plain).expect("write");
        }
        roundtrip("br", &br, &plain);
        roundtrip(
            "zstd",
            &zstd::encode_all(&plain[..], 3).expect("zstd"),
            &plain,
        );
        assert!(Decoder::for_encoding("identity").is_none());
    }

    #[test]
    fn a_bomb_is_refused() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..300 {
            gz.write_all(&zeros).expect("write");
        }
        let bomb = gz.finish().expect("gzip");
        let mut decoder = Decoder::for_encoding("gzip").expect("gzip");
        let failed = bomb
            .chunks(64 << 10)
            .any(|piece| match decoder.decode(piece) {
                Ok(out) => {
                    out.clear();
                    false
                }
                Err(_) => true,
            });
        assert!(failed);
    }
}
