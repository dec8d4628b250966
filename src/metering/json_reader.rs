//! A strict reader of one JSON text held whole, for the typed readings of provider events. It
//! checks the grammar of RFC 8259 in one pass, exactly as serde_json does when it skips a
//! value, and hands out strings borrowed from the text where they have no escapes.
//!
//! Written by hand because serde_json's derive spends about 15 instructions a byte on a chat
//! answer (callgrind): it reads every key as a string and every skipped value a byte at a time.
//! This reader compares keys as byte slices and skips runs of string and number bytes in tight
//! loops.
//!
//! Every method returns `None` on anything it does not read exactly: invalid JSON, and also
//! valid JSON the typed readings leave to serde_json's `Value` (a key with an escape, a string
//! with a lone surrogate, nesting deeper than serde_json allows). `None` always means "decline",
//! never "absent".

use std::borrow::Cow;

/// serde_json refuses deeper nesting; so does this reader, before it.
const MAX_DEPTH: u32 = 120;

pub struct Reader<'a> {
    text: &'a str,
    pos: usize,
    depth: u32,
}

impl<'a> Reader<'a> {
    pub fn new(text: &'a str) -> Reader<'a> {
        Reader {
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        let bytes = self.bytes();
        // Compact JSON has no whitespace: every blank is at most b' '.
        match bytes.get(self.pos) {
            Some(&b) if b > b' ' => return Some(b),
            None => return None,
            Some(_) => {}
        }
        while let Some(&b) = bytes.get(self.pos) {
            if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    #[inline(always)]
    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.pos += 1)
    }

    /// Only whitespace is left.
    pub fn end(&mut self) -> Option<()> {
        self.peek().is_none().then_some(())
    }

    /// Consumes a `null` if one is next.
    pub fn null(&mut self) -> bool {
        let found = self.peek() == Some(b'n') && self.bytes()[self.pos..].starts_with(b"null");
        if found {
            self.pos += 4;
        }
        found
    }

    /// Reads an object, calling `member` with each key; `member` must consume the value.
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Reader<'a>, &'a [u8]) -> Option<()>,
    ) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            r.eat(b'"')?;
            let key = r.key()?;
            r.eat(b':')?;
            member(r, key)
        })
    }

    /// Reads an array, calling `item` for each element; `item` must consume it.
    pub fn array(&mut self, item: impl FnMut(&mut Reader<'a>) -> Option<()>) -> Option<()> {
        self.sequence(b'[', b']', item)
    }

    /// Reads an object whose keys may have escapes, calling `member` with each key as written
    /// (escapes not decoded) and whether it has one; `member` must consume the value.
    pub fn object_any_keys(
        &mut self,
        mut member: impl FnMut(&mut Reader<'a>, &'a [u8], bool) -> Option<()>,
    ) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            r.eat(b'"')?;
            let start = r.pos;
            let (key, escaped) = match r.key() {
                Some(key) => (key, false),
                None => {
                    r.pos = start;
                    r.skip_string_rest()?;
                    (&r.bytes()[start..r.pos - 1], true)
                }
            };
            r.eat(b':')?;
            member(r, key, escaped)
        })
    }

    /// An object whose keys matter to no one: they may have escapes.
    fn skip_object(&mut self) -> Option<()> {
        self.sequence(b'{', b'}', |r| {
            r.eat(b'"')?;
            r.skip_string_rest()?;
            r.eat(b':')?;
            r.skip_value()
        })
    }

    /// `open`, the items separated by commas, `close`.
    fn sequence(
        &mut self,
        open: u8,
        close: u8,
        mut item: impl FnMut(&mut Reader<'a>) -> Option<()>,
    ) -> Option<()> {
        self.eat(open)?;
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return None;
        }
        if self.peek()? != close {
            loop {
                item(self)?;
                match self.peek()? {
                    b',' => self.pos += 1,
                    b if b == close => break,
                    _ => return None,
                }
            }
        }
        self.pos += 1;
        self.depth -= 1;
        Some(())
    }

    /// A key after its opening quote. One with an escape is declined: it would have to be
    /// decoded before it could be told from the keys the readings look for.
    #[inline(always)]
    fn key(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        let len = plain_run(&self.bytes()[start..]);
        let end = start + len;
        if self.bytes().get(end) != Some(&b'"') {
            return None;
        }
        self.pos = end + 1;
        Some(&self.bytes()[start..end])
    }

    /// A string value, decoded; borrowed when it has no escape.
    pub fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.pos;
        let end = start + plain_run(&self.bytes()[start..]);
        match *self.bytes().get(end)? {
            b'"' => {
                self.pos = end + 1;
                // Quotes are ASCII, so both ends are character boundaries.
                Some(Cow::Borrowed(self.text.get(start..end)?))
            }
            b'\\' => {
                self.pos = end;
                let mut out = String::with_capacity(end - start + 16);
                out.push_str(self.text.get(start..end)?);
                self.decode_rest(&mut out)?;
                Some(Cow::Owned(out))
            }
            _ => None,
        }
    }

    /// The rest of a string from an escape on, onto `out`, up to and past its closing quote.
    fn decode_rest(&mut self, out: &mut String) -> Option<()> {
        loop {
            let start = self.pos;
            let end = start + plain_run(&self.bytes()[start..]);
            out.push_str(self.text.get(start..end)?);
            self.pos = end;
            match *self.bytes().get(end)? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => {
                    let escaped = *self.bytes().get(end + 1)?;
                    self.pos = end + 2;
                    out.push(match escaped {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => self.unicode_escape()?,
                        _ => return None,
                    });
                }
                _ => return None,
            }
        }
    }

    /// The code point of a `\u` escape whose `\u` is read, a surrogate pair taken whole. A lone
    /// surrogate is declined: it is no character, and serde_json refuses it as a string.
    fn unicode_escape(&mut self) -> Option<char> {
        let first = self.hex4()?;
        let code = match first {
            0xD800..=0xDBFF => {
                if !self.bytes()[self.pos..].starts_with(b"\\u") {
                    return None;
                }
                self.pos += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return None;
                }
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            }
            code => code,
        };
        char::from_u32(code)
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.bytes().get(self.pos..self.pos + 4)?;
        let mut code = 0;
        for &d in digits {
            code = code << 4 | char::from(d).to_digit(16)?;
        }
        self.pos += 4;
        Some(code)
    }

    /// The text of the next value, checked, without surrounding whitespace.
    pub fn raw_value(&mut self) -> Option<&'a str> {
        self.raw_value_with(Reader::skip_value)
            .map(|(text, ())| text)
    }

    /// The next value read by `read` (which must consume it), with its text.
    pub fn raw_value_with<T>(
        &mut self,
        read: impl FnOnce(&mut Reader<'a>) -> Option<T>,
    ) -> Option<(&'a str, T)> {
        self.peek()?;
        let start = self.pos;
        let value = read(self)?;
        Some((self.text.get(start..self.pos)?, value))
    }

    /// Checks and passes over the next value. A scalar is read where this is called; objects
    /// and arrays out of line (`skip_nested`): most values skipped are scalars, and a call into
    /// the recursive skip saved and restored its registers for each (about 14 instructions a
    /// value, callgrind).
    #[inline(always)]
    pub fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => {
                self.pos += 1;
                self.skip_string_rest()
            }
            b'-' | b'0'..=b'9' => self.number(),
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            _ => self.skip_nested(),
        }
    }

    /// An object or an array, checked and passed over.
    #[inline(never)]
    fn skip_nested(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.skip_object(),
            // Numbers read in the loop itself, no call each: an embedding is thousands.
            b'[' => self.array(|r| match r.peek()? {
                b'-' | b'0'..=b'9' => r.number(),
                _ => r.skip_value(),
            }),
            _ => None,
        }
    }

    /// A whole number without sign, fraction or exponent that fits a `u64`, read and consumed.
    /// `None` for any other value, with nothing consumed.
    #[inline(always)]
    pub fn whole_number(&mut self) -> Option<u64> {
        self.peek()?;
        let bytes = self.bytes();
        let at = self.pos;
        let n = digits(bytes.get(at..)?);
        let run = bytes.get(at..at + n)?;
        if n == 0
            || (n > 1 && run[0] == b'0')
            || matches!(bytes.get(at + n), Some(b'.' | b'e' | b'E'))
        {
            return None;
        }
        let mut value = 0u64;
        for &d in run {
            value = value.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.pos = at + n;
        Some(value)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes()[self.pos..]
            .starts_with(word)
            .then(|| self.pos += word.len())
    }

    /// A string after its opening quote. Any `\u` escape passes that has four hex digits, as
    /// in serde_json's skip: a skipped string is never decoded.
    #[inline(always)]
    fn skip_string_rest(&mut self) -> Option<()> {
        loop {
            let end = self.pos + plain_run(&self.bytes()[self.pos..]);
            match *self.bytes().get(end)? {
                b'"' => {
                    self.pos = end + 1;
                    return Some(());
                }
                b'\\' => {
                    self.pos = end + 2;
                    match *self.bytes().get(end + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            self.hex4()?;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    #[inline(always)]
    fn number(&mut self) -> Option<()> {
        let bytes = self.bytes();
        let mut i = self.pos;
        if bytes.get(i) == Some(&b'-') {
            i += 1;
        }
        match bytes.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i += digits(&bytes[i..]),
            _ => return None,
        }
        if bytes.get(i) == Some(&b'.') {
            i += 1;
            let n = digits(&bytes[i..]);
            if n == 0 {
                return None;
            }
            i += n;
        }
        if matches!(bytes.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(bytes.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let n = digits(&bytes[i..]);
            if n == 0 {
                return None;
            }
            i += n;
        }
        self.pos = i;
        Some(())
    }
}

/// How many ASCII digits the bytes start with. Eight at a time while it can: an embedding's
/// floats are mostly digits, and a byte at a time they took about half of its parse (6.6
/// instructions a digit, callgrind).
#[inline(always)]
fn digits(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_NIBBLES: u64 = ONES * 0xF0;
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        let v = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // A digit (0x30..=0x39) has a high nibble of 3 as it is and also with 6 added. The
        // addition carries out of a byte only from 0xFA up, a non-digit, and so only alters
        // bytes after the first non-digit, which are not counted.
        let off = ((v & HIGH_NIBBLES) ^ (ONES * 0x30))
            | ((v.wrapping_add(ONES * 0x06) & HIGH_NIBBLES) ^ (ONES * 0x30));
        if off != 0 {
            // The lowest byte with a bit set is the first non-digit.
            return i + (off.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count()
}

/// How many bytes from the start need nothing done inside a string: no quote, no backslash, no
/// control character. Eight at a time while it can, as serde_json's own skip does.
#[inline(always)]
fn plain_run(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut i = 0;
    while let Some(word) = bytes.get(i..i + 8) {
        let v = u64::from_le_bytes(word.try_into().unwrap_or_default());
        // A byte below 0x20, a `"` or a `\`, found as a zero byte after a subtraction or an xor.
        let stop = (v.wrapping_sub(ONES * 0x20) & !v & HIGHS)
            | has_zero(v ^ (ONES * u64::from(b'"')))
            | has_zero(v ^ (ONES * u64::from(b'\\')));
        if stop != 0 {
            return i + (stop.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + bytes[i..]
        .iter()
        .take_while(|&&b| b >= 0x20 && b != b'"' && b != b'\\')
        .count()
}

#[cfg(test)]
mod tests;
