//! Vendor adapters as WebAssembly components: the engine, one loaded plugin, and the
//! registry the request path reads from.

mod cache;
mod engine;
mod registry;

pub use engine::{Engine, PluginLimits};
pub use registry::{LoadReport, Loader, Registry};

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::error::RelayError;
use crate::metrics::Metrics;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "adapter-plugin",
        exports: { default: async },
    });
}

pub use bindings::relay::adapter::types::{
    AdapterError, AuthScheme, CallContext, Endpoint, Header, PluginInfo, RelayResponse, StreamEnd, StreamEvent,
    StreamFormat, StreamOutput, UpstreamRequest, UpstreamResponse, Usage,
};

use bindings::{AdapterPlugin, AdapterPluginPre};
use engine::PluginState;

/// A failed adapter call, split the way callers branch on it.
#[derive(Debug)]
pub enum CallError {
    /// The adapter answered with an error of the contract.
    Adapter(AdapterError),
    /// The adapter trapped or hit a limit; its instance is gone.
    Trap { reason: &'static str, message: String },
    /// Every adapter instance slot is in use (`limits.plugin_instances`).
    Capacity(String),
}

impl CallError {
    pub fn into_relay(self, plugin: &str) -> RelayError {
        match self {
            CallError::Adapter(AdapterError::InvalidRequest(m)) => RelayError::plugin_rejected(m, "invalid_request"),
            CallError::Adapter(AdapterError::Unsupported(m)) => RelayError::plugin_rejected(m, "unsupported_parameter"),
            CallError::Adapter(AdapterError::InvalidUpstream(m)) => {
                RelayError::bad_upstream(format!("adapter '{plugin}' could not read the upstream response: {m}"))
            }
            CallError::Adapter(AdapterError::Internal(m)) => {
                RelayError::plugin(format!("adapter '{plugin}' failed: {m}"))
            }
            CallError::Trap { reason, message } => {
                RelayError::plugin(format!("adapter '{plugin}' crashed ({reason}): {message}"))
            }
            CallError::Capacity(m) => RelayError::unavailable(format!("adapter '{plugin}' is at capacity: {m}")),
        }
    }
}

/// One loaded adapter version. Requests hold an `Arc<Plugin>` for their whole life, so a
/// reload never pulls a version out from under a running stream.
pub struct Plugin {
    pub info: PluginInfo,
    pub path: PathBuf,
    pub sha256: String,
    pub loaded_at: std::time::SystemTime,
    /// Compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time to read, compile (or load), pre-instantiate and smoke-call it.
    pub prepare_ms: f64,
    pre: AdapterPluginPre<PluginState>,
    engine: Engine,
    metrics: Arc<Metrics>,
}

impl Plugin {
    pub fn name(&self) -> &str {
        &self.info.name
    }

    pub fn supports(&self, endpoint: Endpoint) -> bool {
        self.info.endpoints.contains(&endpoint)
    }

    /// A fresh, isolated instance: nothing from another request can be seen in it.
    async fn instance(&self, request_id: &str) -> Result<(Store<PluginState>, AdapterPlugin), CallError> {
        let mut store = self.engine.store(self.name(), request_id);
        let instance = self.pre.instantiate_async(&mut store).await.map_err(|e| {
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
                tracing::warn!(plugin = %self.name(), error = %e, "adapter instance pool exhausted");
                return CallError::Capacity(e.to_string());
            }
            self.trap(e, "instantiate")
        })?;
        Ok((store, instance))
    }

    fn trap(&self, e: wasmtime::Error, call: &str) -> CallError {
        let reason = engine::trap_reason(&e);
        self.metrics.plugin_traps.inc([self.name(), reason]);
        tracing::warn!(plugin = %self.name(), call, reason, error = %format!("{e:#}"), "adapter trapped");
        let message = match reason {
            "cpu_limit" => {
                format!("{call} ran past the CPU limit of {} ms", self.engine.limits().call_timeout.as_millis())
            }
            "memory_limit" => {
                format!("{call} went past the memory limit of {} MiB", self.engine.limits().memory / (1024 * 1024))
            }
            _ => format!("{call}: {}", e.root_cause()),
        };
        CallError::Trap { reason, message }
    }

    fn adapter_result<T>(
        &self,
        call: &'static str,
        r: wasmtime::Result<Result<T, AdapterError>>,
    ) -> Result<T, CallError> {
        self.metrics.plugin_calls.inc([self.name(), call]);
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let kind = match &e {
                    AdapterError::InvalidRequest(_) => "invalid_request",
                    AdapterError::Unsupported(_) => "unsupported",
                    AdapterError::InvalidUpstream(_) => "invalid_upstream",
                    AdapterError::Internal(_) => "internal",
                };
                self.metrics.plugin_errors.inc([self.name(), kind]);
                Err(CallError::Adapter(e))
            }
            Err(e) => Err(self.trap(e, call)),
        }
    }

    pub async fn transform_request(&self, ctx: &CallContext, body: &str) -> Result<UpstreamRequest, CallError> {
        let (mut store, inst) = self.instance(&ctx.request_id).await?;
        let r = inst.relay_adapter_adapter().call_transform_request(&mut store, ctx, body).await;
        self.adapter_result("transform_request", r)
    }

    pub async fn transform_response(
        &self,
        ctx: &CallContext,
        response: &UpstreamResponse,
    ) -> Result<RelayResponse, CallError> {
        let (mut store, inst) = self.instance(&ctx.request_id).await?;
        let r = inst.relay_adapter_adapter().call_transform_response(&mut store, ctx, response).await;
        self.adapter_result("transform_response", r)
    }

    /// Start a stream translation; the session owns its instance until it is dropped.
    pub async fn open_stream(self: &Arc<Self>, ctx: &CallContext) -> Result<StreamSession, CallError> {
        let (mut store, instance) = self.instance(&ctx.request_id).await?;
        self.metrics.plugin_calls.inc([self.name(), "stream_open"]);
        let resource = instance
            .relay_adapter_adapter()
            .stream_transformer()
            .call_constructor(&mut store, ctx)
            .await
            .map_err(|e| self.trap(e, "stream_open"))?;
        Ok(StreamSession { plugin: self.clone(), store, instance, resource })
    }
}

/// One stream's adapter state. Dropping it (client gone, timeout) frees the instance.
pub struct StreamSession {
    plugin: Arc<Plugin>,
    store: Store<PluginState>,
    instance: AdapterPlugin,
    resource: ResourceAny,
}

impl StreamSession {
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    pub async fn push(&mut self, event: &StreamEvent) -> Result<StreamOutput, CallError> {
        self.plugin.engine.reset_deadline(&mut self.store);
        let r = self
            .instance
            .relay_adapter_adapter()
            .stream_transformer()
            .call_push(&mut self.store, self.resource, event)
            .await;
        self.plugin.adapter_result("stream_push", r)
    }

    pub async fn finish(&mut self) -> Result<StreamEnd, CallError> {
        self.plugin.engine.reset_deadline(&mut self.store);
        let r = self
            .instance
            .relay_adapter_adapter()
            .stream_transformer()
            .call_finish(&mut self.store, self.resource)
            .await;
        self.plugin.adapter_result("stream_finish", r)
    }
}
