//! Logging through the host: lines carry the adapter's name and the request id. On a
//! native build (unit tests) they go nowhere.

#[cfg(target_arch = "wasm32")]
use crate::bindings::relay::adapter::log::{Level, log};

macro_rules! level_fn {
    ($name:ident, $level:ident) => {
        pub fn $name(message: &str) {
            #[cfg(target_arch = "wasm32")]
            log(Level::$level, message);
            #[cfg(not(target_arch = "wasm32"))]
            let _ = message;
        }
    };
}

level_fn!(debug, Debug);
level_fn!(info, Info);
level_fn!(warn, Warn);
level_fn!(error, Error);
