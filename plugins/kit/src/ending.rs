//! How a vendor stream ends, decided the same way by every adapter: it is complete when the
//! vendor's terminal event came (`[DONE]`, `message_stop`), or when every choice it began
//! carried a finish reason (a vendor that leaves out its terminator lost nothing of the
//! answer, and the client gets its normal end). Cut before that, the answer is truncated,
//! and `finish` says so with an error, so the client sees the cut.

use crate::AdapterError;
use crate::error::invalid_upstream;

/// What a stream has shown of its end so far. Feed it from `push`, ask it in `finish`.
#[derive(Debug, Default, Clone)]
pub struct Ending {
    terminated: bool,
    /// A choice carried a finish reason.
    finished: bool,
    /// Choices begun and not finished since, by index (a handful at most: `n` choices).
    open: Vec<u64>,
}

impl Ending {
    /// The vendor's terminal event came.
    pub fn terminal(&mut self) {
        self.terminated = true;
    }

    /// A chunk of choice `index`: with a finish reason the choice is complete; without one
    /// it is open (again), so a stream cut after it is truncated.
    pub fn choice(&mut self, index: u64, finish_reason: bool) {
        if finish_reason {
            self.finished = true;
            self.open.retain(|&i| i != index);
        } else if !self.open.contains(&index) {
            self.open.push(index);
        }
    }

    /// The finish reason of a vendor that streams one choice (Anthropic's `stop_reason`,
    /// Gemini's `finishReason`).
    pub fn finish_reason(&mut self) {
        self.choice(0, true);
    }

    /// Whether a stream that ends now is complete.
    pub fn is_complete(&self) -> bool {
        self.terminated || (self.finished && self.open.is_empty())
    }

    /// For `finish`: nothing when the stream is complete, else the error that marks the
    /// answer as cut; `terminator` names what never came (`[DONE]`, `message_stop`).
    pub fn check(&self, terminator: &str) -> Result<(), AdapterError> {
        if self.is_complete() {
            return Ok(());
        }
        Err(invalid_upstream(format!(
            "the vendor's stream ended before {terminator}, with no finish reason: the answer was cut"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn complete_by_terminator_or_by_every_choice_finishing() {
        let mut e = Ending::default();
        assert!(!e.is_complete(), "an empty stream was cut");
        assert!(
            matches!(e.check("[DONE]"), Err(AdapterError::InvalidUpstream(m)) if m.contains("ended before [DONE]"))
        );
        e.choice(0, false);
        assert!(!e.is_complete());
        e.choice(0, true);
        assert!(e.is_complete() && e.check("[DONE]").is_ok());
        // Two choices: complete only once both finished.
        let mut e = Ending::default();
        e.choice(0, false);
        e.choice(1, false);
        e.choice(0, true);
        assert!(!e.is_complete(), "choice 1 is still open");
        e.choice(1, true);
        assert!(e.is_complete());
        // Content after a finish reopens the choice.
        e.choice(1, false);
        assert!(!e.is_complete());
        e.terminal();
        assert!(e.is_complete(), "the terminator ends it whatever came before");
        let mut e = Ending::default();
        e.finish_reason();
        assert!(e.is_complete());
    }
}
