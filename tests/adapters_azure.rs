//! End-to-end tests of the azure adapter (to be written).
