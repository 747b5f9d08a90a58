//! Incremental framing of upstream stream bodies: Server-Sent Events or NDJSON lines,
//! with a bound on how much one event may hold.

/// One framed upstream event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sse,
    Ndjson,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("upstream stream event is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("upstream stream is not valid UTF-8")]
    NotUtf8,
}

pub struct Framer {
    format: Format,
    max_event: usize,
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a line end.
    scanned: usize,
    /// The last line ended with `\r`: a `\n` that starts the next chunk belongs to it.
    skip_lf: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl Framer {
    pub fn new(format: Format, max_event: usize) -> Self {
        Self {
            format,
            max_event,
            buf: Vec::new(),
            scanned: 0,
            skip_lf: false,
            event: None,
            data: String::new(),
            has_data: false,
        }
    }

    /// Append upstream bytes; call `next_event` until it returns `None`.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event in the bytes pushed so far.
    pub fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        loop {
            if self.skip_lf && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.drain(..1);
                }
                self.skip_lf = false;
            }
            let Some(rel) = self.buf[self.scanned..].iter().position(|&b| b == b'\n' || b == b'\r') else {
                self.scanned = self.buf.len();
                if self.buf.len() + self.data.len() > self.max_event {
                    return Err(FrameError::TooLarge(self.max_event));
                }
                return Ok(None);
            };
            let end = self.scanned + rel;
            let cr = self.buf[end] == b'\r';
            let mut consumed = end + 1;
            if cr {
                match self.buf.get(end + 1) {
                    Some(b'\n') => consumed += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let line: Vec<u8> = self.buf.drain(..consumed).take(end).collect();
            self.scanned = 0;
            let line = String::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
            if let Some(ev) = self.line(line)? {
                return Ok(Some(ev));
            }
        }
    }

    /// The body ended: an event still being built (no blank line after it) is delivered.
    pub fn finish(&mut self) -> Result<Option<Event>, FrameError> {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            let line = String::from_utf8(rest).map_err(|_| FrameError::NotUtf8)?;
            if let Some(ev) = self.line(line)? {
                return Ok(Some(ev));
            }
        }
        Ok(self.dispatch())
    }

    fn line(&mut self, line: String) -> Result<Option<Event>, FrameError> {
        if self.format == Format::Ndjson {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                return Ok(None);
            }
            return Ok(Some(Event { event: None, data: trimmed.to_string() }));
        }
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.find(':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (line.as_str(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
                if self.data.len() > self.max_event {
                    return Err(FrameError::TooLarge(self.max_event));
                }
            }
            "event" => self.event = Some(value.to_string()),
            // id and retry matter to browsers reconnecting, not to a relay reading once.
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<Event> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(Event { event, data: std::mem::take(&mut self.data) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &mut Framer) -> Vec<Event> {
        let mut out = vec![];
        while let Some(e) = f.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    fn ev(event: Option<&str>, data: &str) -> Event {
        Event { event: event.map(String::from), data: data.into() }
    }

    #[test]
    fn sse_events_split_anywhere() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: ping\r\ndata: x\r\ndata: y\r\n\r\ndata:z\r\r";
        for split in 0..input.len() {
            let mut f = Framer::new(Format::Sse, 1024);
            let mut got = vec![];
            f.push(&input[..split]);
            got.extend(all(&mut f));
            f.push(&input[split..]);
            got.extend(all(&mut f));
            assert_eq!(
                got,
                vec![ev(Some("message_start"), "{\"a\":1}"), ev(None, "x\ny"), ev(None, "z")],
                "split at {split}"
            );
        }
    }

    #[test]
    fn trailing_event_without_blank_line() {
        let mut f = Framer::new(Format::Sse, 1024);
        f.push(b"data: [DONE]");
        assert_eq!(f.next_event().unwrap(), None);
        assert_eq!(f.finish().unwrap(), Some(ev(None, "[DONE]")));
    }

    #[test]
    fn ndjson_lines() {
        let mut f = Framer::new(Format::Ndjson, 1024);
        f.push(b"{\"a\":1}\n\n{\"b\":2}\r\n{\"c\"");
        assert_eq!(all(&mut f), vec![ev(None, "{\"a\":1}"), ev(None, "{\"b\":2}")]);
        f.push(b":3}");
        assert_eq!(f.finish().unwrap(), Some(ev(None, "{\"c\":3}")));
    }

    #[test]
    fn bounded() {
        let mut f = Framer::new(Format::Sse, 16);
        f.push(&[b'a'; 17]);
        assert_eq!(f.next_event(), Err(FrameError::TooLarge(16)));
        let mut f = Framer::new(Format::Sse, 16);
        f.push(b"data: 0123456789\ndata: 0123456789\n");
        assert_eq!(f.next_event(), Err(FrameError::TooLarge(16)));
    }
}
