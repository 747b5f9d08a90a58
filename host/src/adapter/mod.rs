//! Vendor adapters as WebAssembly components: the engine, one loaded plugin, and the
//! registry the request path reads from.

mod bindings;
mod cache;
mod engine;
mod registry;

pub use crate::config::AdapterLimits;
pub use engine::Engine;
pub use registry::{LoadReport, Loader, Registry};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::Store;
use wasmtime::component::ResourceAny;

use crate::error::{ErrorKind, Rejection, RelayError};
use crate::metrics::{Metrics, OwnedGaugeGuard};

pub use bindings::Contract;

use crate::model::{
    AdapterError, AdapterInfo, CallContext, RelayResponse, StreamEnd, StreamEvent, StreamOutput, UpstreamRequest,
    UpstreamResponse,
};
use bindings::{Instance, Pre};
use engine::AdapterState;

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
            CallError::Adapter(AdapterError::InvalidRequest(m)) => RelayError::plugin_rejected(m, Rejection::Invalid),
            CallError::Adapter(AdapterError::Unsupported(m)) => RelayError::plugin_rejected(m, Rejection::Unsupported),
            CallError::Adapter(AdapterError::InvalidUpstream(m)) => {
                RelayError::bad_upstream(format!("adapter '{plugin}' could not read the upstream response: {m}"))
            }
            CallError::Adapter(AdapterError::Internal(m)) => {
                RelayError::plugin(format!("adapter '{plugin}' failed: {m}"))
            }
            CallError::Trap { reason, message } => {
                RelayError::plugin(format!("adapter '{plugin}' crashed ({reason}): {message}"))
            }
            CallError::Capacity(m) => {
                RelayError::new(ErrorKind::Capacity, format!("adapter '{plugin}' is at capacity: {m}"))
            }
        }
    }
}

/// Linear memory past which a warm instance is replaced instead of reused: a mapping
/// needs well under this, and one large request should not keep its memory resident.
const RECYCLE_MEMORY: usize = 8 * 1024 * 1024;

/// Longest adapter error message kept: a vendor error explained fits in a few hundred
/// bytes, and the message goes into log lines and client bodies.
pub const MAX_ADAPTER_ERROR: usize = 4096;

/// `s` cut to at most `max` bytes on a character boundary, marked when cut.
pub fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("... (truncated)");
    }
    s
}

fn truncate_error(e: AdapterError) -> AdapterError {
    match e {
        AdapterError::InvalidRequest(m) => AdapterError::InvalidRequest(truncate(m, MAX_ADAPTER_ERROR)),
        AdapterError::Unsupported(m) => AdapterError::Unsupported(truncate(m, MAX_ADAPTER_ERROR)),
        AdapterError::InvalidUpstream(m) => AdapterError::InvalidUpstream(truncate(m, MAX_ADAPTER_ERROR)),
        AdapterError::Internal(m) => AdapterError::Internal(truncate(m, MAX_ADAPTER_ERROR)),
    }
}

/// One loaded adapter version. Requests hold an `Arc<Adapter>` for their whole life, so a
/// reload never pulls a version out from under a running stream.
///
/// Instances are reused (see docs/architecture.md, "Adapter instances"): transforms take
/// a warm instance from `idle` and give it back; streams share a [`StreamHost`]. A trap, an
/// adapter error, `instance_uses` calls or growth past [`RECYCLE_MEMORY`] retires a
/// transform instance; a trap, `instance_uses` streams or that growth retires a stream host.
pub struct Adapter {
    pub info: AdapterInfo,
    pub path: PathBuf,
    pub sha256: String,
    pub loaded_at: std::time::SystemTime,
    /// Compiled code came from the on-disk cache.
    pub from_cache: bool,
    /// Time to read, compile (or load), pre-instantiate and smoke-call it.
    pub prepare_ms: f64,
    pre: Pre,
    engine: Engine,
    metrics: Arc<Metrics>,
    pools: Pools,
}

/// The instances a plugin version keeps between calls.
struct Pools {
    /// Warm instances for transforms, most recently used last.
    idle: Mutex<Vec<Warm>>,
    idle_max: usize,
    /// The stream host new streams join until it is full or retired.
    stream_host: Mutex<Option<Arc<StreamHost>>>,
}

impl Pools {
    fn new() -> Pools {
        // Transforms never yield, so no more run at once than there are runtime threads.
        let idle_max = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        Pools { idle: Mutex::new(Vec::with_capacity(idle_max)), idle_max, stream_host: Mutex::new(None) }
    }
}

/// An instantiated adapter and its store, counted in `relay_plugin_instances`.
struct Warm {
    store: Store<AdapterState>,
    instance: Instance,
    /// Calls served (a request is two: transform-request and transform-response).
    uses: u32,
    _live: OwnedGaugeGuard,
}

impl Adapter {
    pub fn name(&self) -> &str {
        &self.info.name
    }

    /// The contract version the adapter was built against.
    pub fn contract(&self) -> Contract {
        self.pre.contract()
    }

    /// A fresh, isolated instance: nothing from another request can be seen in it.
    async fn instance(&self, request_id: &str) -> Result<Warm, CallError> {
        let mut store = self.engine.store(self.name(), request_id);
        let instantiated =
            tokio::time::timeout(self.engine.wall_timeout(), self.pre.instantiate_async(&mut store)).await;
        let Ok(instantiated) = instantiated else {
            return Err(self.wall_trap("instantiate"));
        };
        let instance = instantiated.map_err(|e| {
            if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>().is_some() {
                tracing::warn!(plugin = %self.name(), error = %e, "adapter instance pool exhausted");
                return CallError::Capacity(e.to_string());
            }
            self.trap(e, "instantiate")
        })?;
        self.metrics.plugin_instantiations.inc([self.name()]);
        let live = OwnedGaugeGuard::new(self.metrics.clone(), |m| &m.plugin_instances);
        Ok(Warm { store, instance, uses: 0, _live: live })
    }

    /// A warm instance if one is idle, else a fresh one.
    async fn checkout(&self, request_id: &Arc<str>) -> Result<Warm, CallError> {
        let warm = self.pools.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut w = match warm {
            Some(w) => w,
            None => self.instance(request_id).await?,
        };
        self.engine.begin_call(&mut w.store, request_id);
        Ok(w)
    }

    /// Give an instance back after a call, unless the call failed or the instance is spent.
    fn checkin(&self, mut w: Warm, ok: bool) {
        w.uses += 1;
        if !ok || !self.reusable(&w) {
            return;
        }
        let mut idle = self.pools.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.pools.idle_max {
            idle.push(w);
        } else {
            // Freeing a store takes microseconds: not under the lock.
            drop(idle);
            drop(w);
        }
    }

    fn reusable(&self, w: &Warm) -> bool {
        w.uses < self.engine.limits().instance_uses && w.store.data().memory() <= RECYCLE_MEMORY
    }

    /// A call that ran past the host's wall-clock bound: its future was dropped mid-call,
    /// so its instance can never be entered again (the caller drops it).
    fn wall_trap(&self, call: &str) -> CallError {
        let reason = "wall_limit";
        self.metrics.plugin_traps.inc([self.name(), reason]);
        self.metrics.plugin_wall_timeouts.inc();
        let ms = self.engine.wall_timeout().as_millis();
        tracing::warn!(plugin = %self.name(), call, reason, bound_ms = ms as u64, "adapter call cut at the wall-clock bound");
        CallError::Trap { reason, message: format!("{call} ran past the wall-clock limit of {ms} ms") }
    }

    /// Run one guest call under the host's wall-clock bound.
    async fn bounded<F: Future>(&self, call: &'static str, f: F) -> Result<F::Output, CallError> {
        tokio::time::timeout(self.engine.wall_timeout(), f).await.map_err(|_| self.wall_trap(call))
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
            _ => truncate(format!("{call}: {}", e.root_cause()), MAX_ADAPTER_ERROR),
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
                let e = truncate_error(e);
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
        let mut w = self.checkout(&ctx.request_id.as_str().into()).await?;
        let call = "transform_request";
        // On expiry the instance is dropped with `w`: a cut call leaves it unusable.
        let r = self.bounded(call, w.instance.transform_request(&mut w.store, ctx, body));
        let r = self.adapter_result(call, r.await?);
        self.checkin(w, r.is_ok());
        r
    }

    pub async fn transform_response(
        &self,
        ctx: &CallContext,
        response: &UpstreamResponse,
    ) -> Result<RelayResponse, CallError> {
        let mut w = self.checkout(&ctx.request_id.as_str().into()).await?;
        let call = "transform_response";
        let r = self.bounded(call, w.instance.transform_response(&mut w.store, ctx, response));
        let r = self.adapter_result(call, r.await?);
        self.checkin(w, r.is_ok());
        r
    }

    /// Join the open stream host if it has room, else start a new one.
    async fn stream_host(&self, request_id: &str) -> Result<Arc<StreamHost>, CallError> {
        let limits = self.engine.limits();
        {
            let open = self.pools.stream_host.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(host) = open.as_ref().filter(|h| h.admits(&limits)) {
                host.members.fetch_add(1, Ordering::Relaxed);
                host.opened.fetch_add(1, Ordering::Relaxed);
                return Ok(host.clone());
            }
        }
        let host = Arc::new(StreamHost::new(self.instance(request_id).await?));
        host.members.fetch_add(1, Ordering::Relaxed);
        host.opened.fetch_add(1, Ordering::Relaxed);
        // The host it replaces lives on until its last stream ends.
        let old = self.pools.stream_host.lock().unwrap_or_else(|e| e.into_inner()).replace(host.clone());
        drop(old);
        Ok(host)
    }

    /// Start a stream translation on a shared instance.
    pub async fn open_stream(self: &Arc<Self>, ctx: &CallContext) -> Result<StreamSession, CallError> {
        let request_id: Arc<str> = ctx.request_id.as_str().into();
        let host = self.stream_host(&request_id).await?;
        let mut session = StreamSession { plugin: self.clone(), host, resource: None, request_id };
        session.open(ctx).await?;
        Ok(session)
    }
}

/// Stream transformers sharing one instance, up to `streams_per_instance` at a time: each
/// live instance holds ~85 KB, so an instance per stream would not fit thousands of
/// streams. A trap in one of them ends the streams it shares the instance with (they get
/// an error event); the host is then retired. Calls are serialised by the lock, and each
/// takes microseconds.
struct StreamHost {
    live: tokio::sync::Mutex<Live>,
    /// Sessions attached now, and ever.
    members: AtomicU32,
    opened: AtomicU32,
    /// Set when the instance trapped: it can never be entered again.
    lost: OnceLock<String>,
    /// Resources of sessions dropped without finishing (client gone, timeout), freed in the
    /// guest at the next call: `Drop` cannot enter the store.
    orphans: Mutex<Vec<ResourceAny>>,
    /// Linear memory after the last call, read without the lock.
    memory: AtomicUsize,
}

struct Live {
    store: Store<AdapterState>,
    instance: Instance,
    _live: OwnedGaugeGuard,
}

impl StreamHost {
    fn new(w: Warm) -> StreamHost {
        StreamHost {
            memory: AtomicUsize::new(w.store.data().memory()),
            live: tokio::sync::Mutex::new(Live {
                store: w.store,
                instance: w.instance,
                _live: OwnedGaugeGuard::new(w._live.metrics(), |m| &m.plugin_stream_instances),
            }),
            members: AtomicU32::new(0),
            opened: AtomicU32::new(0),
            lost: OnceLock::new(),
            orphans: Mutex::new(Vec::new()),
        }
    }

    fn admits(&self, limits: &AdapterLimits) -> bool {
        self.lost.get().is_none()
            && self.members.load(Ordering::Relaxed) < limits.streams_per_instance
            && self.opened.load(Ordering::Relaxed) < limits.instance_uses
            && self.memory.load(Ordering::Relaxed) <= RECYCLE_MEMORY
    }
}

/// One stream's adapter state: a resource in a shared instance. Dropping the session (client
/// gone, timeout) frees the resource at the host's next call, and the instance with the last
/// session of a retired host.
pub struct StreamSession {
    plugin: Arc<Adapter>,
    host: Arc<StreamHost>,
    resource: Option<ResourceAny>,
    request_id: Arc<str>,
}

impl StreamSession {
    pub fn plugin(&self) -> &Arc<Adapter> {
        &self.plugin
    }

    /// Enter the shared instance for one call: refuse if it was lost, free orphaned
    /// resources, and start the CPU budget.
    async fn enter(&self, call: &'static str) -> Result<tokio::sync::MutexGuard<'_, Live>, CallError> {
        let mut live = self.host.live.lock().await;
        if let Some(why) = self.host.lost.get() {
            return Err(CallError::Trap { reason: "instance_lost", message: why.clone() });
        }
        let orphans = std::mem::take(&mut *self.host.orphans.lock().unwrap_or_else(|e| e.into_inner()));
        for r in orphans {
            self.plugin.engine.begin_call(&mut live.store, &self.request_id);
            let dropped = self.plugin.bounded("stream_drop", r.resource_drop_async(&mut live.store)).await;
            let err = match dropped {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => self.plugin.trap(e, "stream_drop"),
                Err(e) => e,
            };
            self.host.lose(call, &err);
            return Err(err);
        }
        self.plugin.engine.begin_call(&mut live.store, &self.request_id);
        Ok(live)
    }

    /// Account for a call; a trap (or a call cut at the wall-clock bound) retires the
    /// shared instance.
    fn leave<T>(
        &self,
        call: &'static str,
        live: &Live,
        r: Result<wasmtime::Result<Result<T, AdapterError>>, CallError>,
    ) -> Result<T, CallError> {
        self.host.memory.store(live.store.data().memory(), Ordering::Relaxed);
        let r = r.and_then(|r| self.plugin.adapter_result(call, r));
        if let Err(e @ CallError::Trap { .. }) = &r {
            self.host.lose(call, e);
        }
        r
    }

    async fn open(&mut self, ctx: &CallContext) -> Result<(), CallError> {
        let mut live = self.enter("stream_open").await?;
        let Live { store, instance, .. } = &mut *live;
        let r = self.plugin.bounded("stream_open", instance.stream_open(store, ctx)).await;
        let resource = self.leave("stream_open", &live, r)?;
        drop(live);
        self.resource = Some(resource);
        Ok(())
    }

    /// The upstream events framed from one read, in order, in one call (counted once in
    /// `relay_plugin_calls_total`, whatever the contract version does inside).
    pub async fn push(&mut self, events: Vec<StreamEvent>) -> Result<StreamOutput, CallError> {
        let Some(resource) = self.resource else {
            return Err(CallError::Adapter(AdapterError::Internal("stream already finished".into())));
        };
        if events.is_empty() {
            return Ok(StreamOutput::default());
        }
        let mut live = self.enter("stream_push").await?;
        let Live { store, instance, .. } = &mut *live;
        let r = self.plugin.bounded("stream_push", instance.stream_push(store, resource, events)).await;
        self.leave("stream_push", &live, r)
    }

    /// The stream's last call; its resource is freed with it.
    pub async fn finish(&mut self) -> Result<StreamEnd, CallError> {
        let Some(resource) = self.resource else {
            return Err(CallError::Adapter(AdapterError::Internal("stream already finished".into())));
        };
        let mut live = self.enter("stream_finish").await?;
        let Live { store, instance, .. } = &mut *live;
        let plugin = &self.plugin;
        let mut r = plugin.bounded("stream_finish", instance.stream_finish(&mut *store, resource)).await;
        let freed = matches!(r, Ok(Ok(_)));
        if freed {
            // A finished transformer's state is of no further use: free it now.
            match plugin.bounded("stream_drop", resource.resource_drop_async(&mut *store)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => r = Ok(Err(e)),
                Err(e) => r = Err(e),
            }
        }
        let r = self.leave("stream_finish", &live, r);
        drop(live);
        if freed {
            self.resource = None;
        }
        r
    }
}

impl StreamHost {
    fn lose(&self, call: &str, e: &CallError) {
        let why = match e {
            CallError::Trap { reason, .. } => format!("a stream sharing this adapter instance crashed it ({reason})"),
            _ => format!("{call} failed"),
        };
        let _ = self.lost.set(why);
    }
}

impl Drop for StreamSession {
    fn drop(&mut self) {
        self.host.members.fetch_sub(1, Ordering::Relaxed);
        if let Some(r) = self.resource.take()
            && self.host.lost.get().is_none()
        {
            self.host.orphans.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        }
    }
}
