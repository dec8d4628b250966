//! Captures chosen top-level members of a JSON object as it streams past, without holding the
//! whole body: a non-streamed embeddings answer can be tens of megabytes of floats, and its
//! `usage` sits at the end. Only members at depth 1 count, so a nested look-alike (a tool's own
//! `usage`) is never taken for the response's.

/// Largest member kept; a bigger one (a huge `choices`) is dropped, never truncated.
const MAX_MEMBER: usize = 4 << 20;

#[derive(Debug)]
pub struct TopLevelCapture {
    wanted: &'static [&'static str],
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// At depth 1, between `{`/`,` and `:`: the next string is a key.
    expecting_key: bool,
    key: Vec<u8>,
    reading_key: bool,
    /// Capturing the current depth-1 value under this key.
    capturing: Option<String>,
    value: Vec<u8>,
    oversized: bool,
    members: Vec<(String, Vec<u8>)>,
    /// The first non-blank byte was not `{`: this is not a JSON object.
    not_an_object: bool,
    started: bool,
}

impl TopLevelCapture {
    pub fn new(wanted: &'static [&'static str]) -> TopLevelCapture {
        TopLevelCapture {
            wanted,
            depth: 0,
            in_string: false,
            escaped: false,
            expecting_key: false,
            key: Vec::new(),
            reading_key: false,
            capturing: None,
            value: Vec::new(),
            oversized: false,
            members: Vec::new(),
            not_an_object: false,
            started: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.not_an_object {
            return;
        }
        let mut i = 0;
        while i < chunk.len() {
            // Runs of bytes that change no state (string contents, numbers, whitespace) are
            // skipped, or copied in one piece into a captured value.
            if self.started && !self.reading_key && !self.escaped {
                let rest = &chunk[i..];
                let run = if self.in_string {
                    memchr::memchr2(b'"', b'\\', rest)
                } else {
                    rest.iter()
                        .position(|b| matches!(b, b'"' | b'{' | b'}' | b'[' | b']' | b',' | b':'))
                }
                .unwrap_or(rest.len());
                if run > 0 {
                    if self.capturing.is_some() {
                        self.keep(&rest[..run]);
                    }
                    i += run;
                    continue;
                }
            }
            let b = chunk[i];
            self.step(b);
            i += 1;
        }
    }

    fn step(&mut self, b: u8) {
        if !self.started {
            if b.is_ascii_whitespace() {
                return;
            }
            self.started = true;
            if b != b'{' {
                self.not_an_object = true;
                return;
            }
        }
        if self.capturing.is_some() {
            self.keep(&[b]);
        }
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.reading_key {
                    self.reading_key = false;
                    return;
                }
            }
            if self.reading_key {
                self.key.push(b);
            }
            return;
        }
        match b {
            b'"' => {
                self.in_string = true;
                if self.depth == 1 && self.expecting_key {
                    self.reading_key = true;
                    self.key.clear();
                }
            }
            b'{' | b'[' => {
                self.depth += 1;
                if self.depth == 1 {
                    self.expecting_key = true;
                }
            }
            b'}' | b']' => {
                if self.depth == 1 {
                    self.end_value();
                }
                self.depth = self.depth.saturating_sub(1);
            }
            b':' if self.depth == 1 && self.expecting_key => {
                self.expecting_key = false;
                let key = String::from_utf8_lossy(&self.key);
                if self.wanted.contains(&key.as_ref()) {
                    self.capturing = Some(key.into_owned());
                    self.value.clear();
                    self.oversized = false;
                }
            }
            b',' if self.depth == 1 => {
                self.end_value();
                self.expecting_key = true;
            }
            _ => {}
        }
    }

    /// Appends to the captured value, dropping it whole once it would pass the cap.
    fn keep(&mut self, bytes: &[u8]) {
        if self.value.len() + bytes.len() <= MAX_MEMBER {
            self.value.extend_from_slice(bytes);
        } else {
            self.oversized = true;
        }
    }

    fn end_value(&mut self) {
        if let Some(key) = self.capturing.take() {
            self.value.pop(); // the `,` or `}` that ended it
            if !self.oversized {
                self.members.push((key, std::mem::take(&mut self.value)));
            }
        }
    }

    /// The captured members, parsed; `None` when the body was not a JSON object at all.
    pub fn finish(self) -> Option<serde_json::Map<String, serde_json::Value>> {
        if self.not_an_object || !self.started {
            return None;
        }
        let mut map = serde_json::Map::new();
        for (key, raw) in self.members {
            if let Ok(value) = serde_json::from_slice(&raw) {
                map.insert(key, value);
            }
        }
        Some(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANTED: &[&str] = &["usage", "model"];

    fn capture(chunks: &[&[u8]]) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut c = TopLevelCapture::new(WANTED);
        for chunk in chunks {
            c.feed(chunk);
        }
        c.finish()
    }

    #[test]
    fn takes_top_level_members_only() {
        let body = br#"{"data":[{"usage":{"input_tokens":999},"x":"\"usage\":"}],"model" : "m",
            "tool":{"usage":{"prompt_tokens":5}},"usage":{"prompt_tokens":12,"total_tokens":12}}"#;
        let map = capture(&[body]).expect("object");
        assert_eq!(map["model"], "m");
        assert_eq!(map["usage"]["prompt_tokens"], 12);
        assert_eq!(map.len(), 2);
        for i in 0..body.len() {
            assert_eq!(
                capture(&[&body[..i], &body[i..]]).expect("object"),
                map,
                "split at {i}"
            );
        }
    }

    #[test]
    fn not_an_object() {
        assert!(capture(&[b"  [1,2]"]).is_none());
        assert!(capture(&[b"nope"]).is_none());
        assert!(capture(&[b""]).is_none());
        assert_eq!(
            capture(&[b"{\"usage\": {\"a\": 1"]).expect("object").len(),
            0
        );
    }
}

#[cfg(test)]
mod linear {
    use super::*;

    #[test]
    fn a_large_unwanted_array_is_skipped_in_linear_time() {
        // 64 embeddings of 1536 floats, then usage: the skip must not rescan the array per byte.
        let floats = vec!["-0.0123456789"; 1536].join(",");
        let data: Vec<String> = (0..64)
            .map(|i| format!("{{\"object\":\"embedding\",\"index\":{i},\"embedding\":[{floats}]}}"))
            .collect();
        let body = format!(
            "{{\"object\":\"list\",\"data\":[{}],\"model\":\"m\",\"usage\":{{\"prompt_tokens\":8,\"total_tokens\":8}}}}",
            data.join(",")
        );
        let mut capture = TopLevelCapture::new(&["usage", "model"]);
        for piece in body.as_bytes().chunks(16 << 10) {
            capture.feed(piece);
        }
        let map = capture.finish().expect("object");
        assert_eq!(map["usage"]["prompt_tokens"], 8);
        assert_eq!(map["model"], "m");
    }
}
