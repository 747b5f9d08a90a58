//! Incremental framing of upstream stream bodies: Server-Sent Events or NDJSON lines,
//! with a bound on how much one event may hold.
//!
//! Linear in its input whatever the upstream sends: lines are consumed by moving a
//! cursor, and the consumed bytes are dropped once per `push` (one move of the unread
//! tail), so a frame of a million line breaks costs a million cheap steps, not a million
//! moves of the buffer.

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
    buf: Vec<u8>,
    /// Start of the bytes of `buf` not yet consumed.
    start: usize,
    /// Bytes of `buf` (from the front) already searched for a line end.
    scanned: usize,
    /// The last line ended with `\r`: a `\n` that starts the next chunk belongs to it.
    skip_lf: bool,
    event: Pending,
}

/// The longest field prefix a counted line carries (`event: `); a partial line may be this
/// much longer than the limit, since only the field's value counts toward it.
const FIELD_PREFIX_MAX: usize = "event: ".len();

/// The event being assembled from its lines.
struct Pending {
    format: Format,
    max_event: usize,
    event: Option<String>,
    data: String,
    has_data: bool,
}

impl Framer {
    pub fn new(format: Format, max_event: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            skip_lf: false,
            event: Pending { format, max_event, event: None, data: String::new(), has_data: false },
        }
    }

    /// The bound on one event's bytes.
    pub fn max_event(&self) -> usize {
        self.event.max_event
    }

    /// Append upstream bytes; call `next_event` until it returns `None`.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event in the bytes pushed so far.
    pub fn next_event(&mut self) -> Result<Option<Event>, FrameError> {
        loop {
            if self.skip_lf && self.start < self.buf.len() {
                if self.buf[self.start] == b'\n' {
                    self.start += 1;
                }
                self.skip_lf = false;
            }
            let from = self.scanned.max(self.start);
            let Some(rel) = memchr::memchr2(b'\n', b'\r', &self.buf[from..]) else {
                self.scanned = self.buf.len();
                // The line still arriving holds its field name too (`data: `): an event of
                // exactly the limit must not be refused because its last line came in two reads.
                if self.buf.len() - self.start + self.event.data.len() > self.event.max_event + FIELD_PREFIX_MAX {
                    return Err(FrameError::TooLarge(self.event.max_event));
                }
                return Ok(None);
            };
            let end = from + rel;
            let mut next = end + 1;
            if self.buf[end] == b'\r' {
                match self.buf.get(end + 1) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let line = &self.buf[self.start..end];
            self.start = next;
            self.scanned = next;
            if let Some(ev) = self.event.line(line)? {
                return Ok(Some(ev));
            }
        }
    }

    /// The body ended: an event still being built (no blank line after it) is delivered.
    pub fn finish(&mut self) -> Result<Option<Event>, FrameError> {
        if self.skip_lf && self.buf.get(self.start) == Some(&b'\n') {
            self.start += 1;
        }
        self.skip_lf = false;
        if self.start < self.buf.len() {
            let rest = std::mem::take(&mut self.buf);
            let line = &rest[self.start..];
            self.start = 0;
            self.scanned = 0;
            if let Some(ev) = self.event.line(line)? {
                return Ok(Some(ev));
            }
        }
        Ok(self.event.dispatch())
    }
}

impl Pending {
    fn line(&mut self, line: &[u8]) -> Result<Option<Event>, FrameError> {
        let line = std::str::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
        if self.format == Format::Ndjson {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                return Ok(None);
            }
            if trimmed.len() > self.max_event {
                return Err(FrameError::TooLarge(self.max_event));
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
            None => (line, ""),
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
            "event" if value.len() > self.max_event => return Err(FrameError::TooLarge(self.max_event)),
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
        f.push(&[b'a'; 16 + FIELD_PREFIX_MAX + 1]);
        assert_eq!(f.next_event(), Err(FrameError::TooLarge(16)));
        let mut f = Framer::new(Format::Sse, 16);
        f.push(b"data: 0123456789\ndata: 0123456789\n");
        assert_eq!(f.next_event(), Err(FrameError::TooLarge(16)));
    }

    /// An event of exactly the limit passes however its line is cut, one byte more never.
    #[test]
    fn an_event_of_exactly_the_limit_passes_when_its_line_arrives_in_pieces() {
        let line = format!("data: {}", "x".repeat(16));
        for cut in 0..=line.len() {
            let mut f = Framer::new(Format::Sse, 16);
            f.push(&line.as_bytes()[..cut]);
            assert_eq!(f.next_event(), Ok(None), "cut at {cut}");
            f.push(&line.as_bytes()[cut..]);
            assert_eq!(f.next_event(), Ok(None), "cut at {cut}");
            f.push(b"\n\n");
            assert_eq!(f.next_event(), Ok(Some(ev(None, &"x".repeat(16)))), "cut at {cut}");
        }
        let mut f = Framer::new(Format::Sse, 16);
        f.push(format!("data: {}\n\n", "x".repeat(17)).as_bytes());
        assert_eq!(f.next_event(), Err(FrameError::TooLarge(16)));
    }

    /// A flood of line breaks is consumed in one pass: with the old drain-per-line framer
    /// this input took minutes; a regression shows as a hang, not as a timing assertion.
    #[test]
    fn line_break_flood_is_linear() {
        for format in [Format::Sse, Format::Ndjson] {
            let mut f = Framer::new(format, 1024);
            for _ in 0..4 {
                f.push(&vec![b'\n'; 1 << 20]);
                assert_eq!(f.next_event(), Ok(None));
            }
            f.push(b"data: x\n\n");
            assert!(f.next_event().unwrap().is_some());
            assert!(f.buf.len() < 64, "consumed bytes are dropped at the next push");
        }
    }

    /// The plain reading of the SSE and NDJSON rules, line by line, as the oracle.
    fn reference(format: Format, input: &[u8]) -> Result<Vec<Event>, FrameError> {
        let mut lines = vec![];
        let mut cur = vec![];
        let mut i = 0;
        while i < input.len() {
            match input[i] {
                b'\r' => {
                    lines.push(std::mem::take(&mut cur));
                    if input.get(i + 1) == Some(&b'\n') {
                        i += 1;
                    }
                }
                b'\n' => lines.push(std::mem::take(&mut cur)),
                b => cur.push(b),
            }
            i += 1;
        }
        if !cur.is_empty() {
            lines.push(cur);
        }
        let mut out = vec![];
        let (mut event, mut data, mut has_data) = (None, String::new(), false);
        for line in lines {
            let line = String::from_utf8(line).map_err(|_| FrameError::NotUtf8)?;
            if format == Format::Ndjson {
                if !line.trim().is_empty() {
                    out.push(Event { event: None, data: line.trim().to_string() });
                }
                continue;
            }
            if line.is_empty() {
                if has_data {
                    out.push(Event { event: event.take(), data: std::mem::take(&mut data) });
                    has_data = false;
                }
                event = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.find(':') {
                Some(i) => (&line[..i], line[i + 1..].strip_prefix(' ').unwrap_or(&line[i + 1..])),
                None => (line.as_str(), ""),
            };
            match field {
                "data" => {
                    if has_data {
                        data.push('\n');
                    }
                    data.push_str(value);
                    has_data = true;
                }
                "event" => event = Some(value.to_string()),
                _ => {}
            }
        }
        if has_data {
            out.push(Event { event, data });
        }
        Ok(out)
    }

    /// Feed `input` in the pieces `cuts` makes of it, then finish.
    fn framed(format: Format, max: usize, input: &[u8], cuts: &[usize]) -> Result<Vec<Event>, FrameError> {
        let mut f = Framer::new(format, max);
        let mut out = vec![];
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([input.len()]) {
            f.push(&input[at..cut.max(at)]);
            at = cut.max(at);
            while let Some(e) = f.next_event()? {
                out.push(e);
            }
            // Memory stays bounded: one event's worth plus the last piece pushed.
            assert!(f.buf.len() - f.start <= max + input.len());
        }
        if let Some(e) = f.finish()? {
            out.push(e);
        }
        Ok(out)
    }

    /// Bytes biased toward what matters to a framer: line ends, colons, field names.
    fn stream_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"data: ".to_vec()),
            Just(b"data:".to_vec()),
            Just(b"event: ".to_vec()),
            Just(b": ping".to_vec()),
            Just(b"id: 1".to_vec()),
            Just(b"{\"a\":1}".to_vec()),
            Just(vec![0xff]),
            Just("é".as_bytes().to_vec()),
            proptest::collection::vec(any::<u8>(), 0..8),
            "[a-z ]{0,12}".prop_map(String::into_bytes),
        ];
        proptest::collection::vec(piece, 0..64).prop_map(|v| v.concat())
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: the same events as the plain line-by-line reading, or
        /// the same refusal; never a panic, never more than the bound per event.
        #[test]
        fn frames_like_the_reference(
            input in stream_bytes(),
            cuts in proptest::collection::vec(0usize..4096, 0..8),
            ndjson in proptest::bool::ANY,
        ) {
            let format = if ndjson { Format::Ndjson } else { Format::Sse };
            let big = framed(format, usize::MAX / 2, &input, &cuts);
            let want = reference(format, &input);
            match (&big, &want) {
                (Ok(got), Ok(want)) => proptest::prop_assert_eq!(got, want),
                (Err(FrameError::NotUtf8), Err(FrameError::NotUtf8)) => {}
                // A bad byte after the last complete event is only seen by `finish`.
                _ => proptest::prop_assert!(want.is_err(), "framer {big:?} vs reference {want:?}"),
            }
            if let Ok(events) = framed(format, 32, &input, &cuts) {
                for e in events {
                    proptest::prop_assert!(e.data.len() <= 32);
                }
            }
        }
    }
}
