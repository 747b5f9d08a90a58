//! End-to-end tests of the anthropic adapter (to be written).
