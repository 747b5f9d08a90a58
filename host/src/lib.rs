//! The relay host: an OpenAI-compatible endpoint in front of many vendors, with vendor
//! adapters as sandboxed WebAssembly components. See docs/architecture.md.

// One module may use unsafe: the compile cache's `Component::deserialize_file`.
#![deny(unsafe_code)]

pub mod access;
pub mod adapter;
pub mod admin;
pub mod answer;
pub mod auth;
pub mod bridge;
pub mod cli;
pub mod config;
pub mod conn;
pub mod cooldown;
pub mod encode;
pub mod error;
pub mod failover;
pub mod forward;
pub mod http;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod models;
pub mod probe;
pub mod reload;
pub mod responses;
pub mod route;
pub mod server;
pub mod service;
pub mod sse;
pub mod stream;
pub mod upstream;
pub mod vendor_request;
