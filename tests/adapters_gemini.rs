//! End-to-end tests of the gemini adapter (to be written).
