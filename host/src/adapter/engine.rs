//! The wasmtime engine shared by every adapter: configuration, the epoch ticker that
//! bounds CPU per call, the linker with the little WASI an adapter may use, and the adapter
//! store with its memory cap and empty WASI context.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use wasmtime::component::{Component, HasData, Linker, ResourceTable, Val};
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings;
use crate::config::AdapterLimits;

/// Granularity of the CPU bound: a call is checked once per tick after its budget could
/// have run out. 10 ms keeps the idle relay at 100 wake-ups a second.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// A call that has not used its CPU budget but has run this many times the budget in wall
/// time is cut anyway: the CPU figure is per thread, and this bounds the case it misses.
/// The same factor is the default of the host's wall-clock bound on every call
/// (`limits.plugin_wall_timeout_ms`), which holds even while a call is suspended.
const WALL_FACTOR: u32 = crate::config::DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR;
/// Host resources (WASI streams, pollables) one store may hold: a Rust std guest holds a
/// handful at a time; wasmtime's default of a million would let a guest hoard host memory.
const MAX_WASI_RESOURCES: usize = 64;
/// Longest an adapter log line may be before it is cut; adapters cannot flood the log.
const MAX_LOG_LINE: usize = 4096;
/// Log lines one call may emit; more are dropped.
const MAX_LOG_LINES_PER_STORE: u32 = 64;

/// Core instances, memories and tables one adapter component may hold: a Rust guest built
/// for wasm32-wasip2 uses one module with one memory, plus small shims.
const CORE_INSTANCES_PER_COMPONENT: u32 = 8;
const MEMORIES_PER_COMPONENT: u32 = 2;
const TABLES_PER_COMPONENT: u32 = 4;
/// Guard pages after each pooled memory: with the 4 GiB reservation turned off, bounds are
/// checked explicitly, and a small guard still catches most stray accesses cheaply.
const POOL_MEMORY_GUARD: u64 = 64 * 1024;

/// What each adapter store carries: an empty WASI context (no files, network, env, args
/// or clocks beyond the defaults Rust std needs to link), the limits, and log context.
pub struct AdapterState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    plugin: Arc<str>,
    request_id: Arc<str>,
    log_lines: u32,
    /// When the running call started (wall time), and once its budget's worth of wall time
    /// has passed, a mark of this thread's CPU time to measure its share of the core from.
    call_wall: Instant,
    cpu_mark: Option<(Duration, Instant)>,
}

impl AdapterState {
    /// Linear memory the instance has grown to: warm instances past a bound are replaced,
    /// so one large request does not keep its memory resident.
    pub fn memory(&self) -> usize {
        self.limits.memory
    }
}

/// The store's memory cap, recording the largest size granted.
struct Limiter {
    cap: StoreLimits,
    memory: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let ok = self.cap.memory_growing(current, desired, maximum)?;
        if ok {
            self.memory = self.memory.max(desired);
        }
        Ok(ok)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.cap.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.cap.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.cap.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.cap.instances()
    }

    fn tables(&self) -> usize {
        self.cap.tables()
    }

    fn memories(&self) -> usize {
        self.cap.memories()
    }
}

/// CPU time used by the calling thread. No WASI function linked for adapters blocks (see
/// `link_wasi`) and the epoch callback never asks to yield, so a call runs start to end on
/// one thread; the host's wall-clock bound covers the case where it would not.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

impl WasiView for AdapterState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::v0_2::relay::adapter::types::Host for AdapterState {}
impl bindings::v0_1::relay::adapter::types::Host for AdapterState {}

/// An adapter's log line, whatever the contract version it logs through.
#[derive(Clone, Copy)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

impl bindings::v0_2::relay::adapter::log::Host for AdapterState {
    fn log(&mut self, level: bindings::v0_2::relay::adapter::log::Level, message: String) {
        use bindings::v0_2::relay::adapter::log::Level as L;
        let level = match level {
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        self.log_line(level, message);
    }
}

impl bindings::v0_1::relay::adapter::log::Host for AdapterState {
    fn log(&mut self, level: bindings::v0_1::relay::adapter::log::Level, message: String) {
        use bindings::v0_1::relay::adapter::log::Level as L;
        let level = match level {
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        self.log_line(level, message);
    }
}

impl AdapterState {
    fn log_line(&mut self, level: Level, message: String) {
        if self.log_lines >= MAX_LOG_LINES_PER_STORE {
            return;
        }
        self.log_lines += 1;
        let mut message = message;
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push_str("...");
        }
        let (plugin, request_id) = (&*self.plugin, &*self.request_id);
        match level {
            Level::Debug => tracing::debug!(plugin, request_id, "{message}"),
            Level::Info => tracing::info!(plugin, request_id, "{message}"),
            Level::Warn => tracing::warn!(plugin, request_id, "{message}"),
            Level::Error => tracing::error!(plugin, request_id, "{message}"),
        }
    }
}

struct Shared {
    engine: wasmtime::Engine,
    linker: Linker<AdapterState>,
    limits: AdapterLimits,
    deadline_ticks: u64,
    stop: Arc<AtomicBool>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Cheap to clone; the epoch ticker stops when the last clone is dropped.
#[derive(Clone)]
pub struct Engine(Arc<Shared>);

impl Engine {
    pub fn new(limits: AdapterLimits) -> Result<Engine> {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        let engine = match Self::pooled(&mut cfg, &limits) {
            Ok(e) => e,
            Err(e) => {
                // E.g. a container with a small virtual-memory limit: the on-demand
                // allocator needs no up-front reservation.
                tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand instance allocation");
                cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::OnDemand);
                cfg.memory_reservation(4 << 30);
                cfg.memory_guard_size(32 << 20);
                wasmtime::Engine::new(&cfg)?
            }
        };

        let mut linker = Linker::new(&engine);
        link_wasi(&mut linker)?;
        // Every contract version the host speaks: their interfaces have distinct names.
        bindings::v0_2::AdapterPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
        bindings::v0_1::AdapterPlugin::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;

        // One owner, one exit: the thread ends at the first tick after the engine is dropped.
        let stop = Arc::new(AtomicBool::new(false));
        let ticker_engine = engine.weak();
        let ticker_stop = stop.clone();
        std::thread::Builder::new().name("relay-epoch".into()).spawn(move || {
            while !ticker_stop.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                match ticker_engine.upgrade() {
                    Some(e) => e.increment_epoch(),
                    None => break,
                }
            }
        })?;

        let deadline_ticks = ticks(limits.call_timeout);
        Ok(Engine(Arc::new(Shared { engine, linker, limits, deadline_ticks, stop })))
    }

    /// An engine whose instances come from a pre-reserved pool: instantiation is a slot
    /// reuse instead of mmap/munmap per request.
    fn pooled(cfg: &mut wasmtime::Config, limits: &AdapterLimits) -> Result<wasmtime::Engine> {
        let n = limits.instances.max(1);
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(CORE_INSTANCES_PER_COMPONENT))
            .total_memories(n.saturating_mul(MEMORIES_PER_COMPONENT))
            .total_tables(n.saturating_mul(TABLES_PER_COMPONENT))
            .total_stacks(n)
            .max_core_instances_per_component(CORE_INSTANCES_PER_COMPONENT)
            .max_memories_per_component(MEMORIES_PER_COMPONENT)
            .max_tables_per_component(TABLES_PER_COMPONENT)
            .max_memory_size(limits.memory as usize);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        // Reserve only the memory cap per slot, not 4 GiB: thousands of slots must fit.
        cfg.memory_reservation(limits.memory);
        cfg.memory_guard_size(POOL_MEMORY_GUARD);
        Ok(wasmtime::Engine::new(cfg)?)
    }

    pub fn wasmtime(&self) -> &wasmtime::Engine {
        &self.0.engine
    }

    /// The linker for one component: the shared one, plus every instance the component
    /// imports that `link_wasi` does not link (socket calls, name lookup, anything else)
    /// made of functions that trap. wasmtime's `define_unknown_imports_as_traps` cannot be
    /// used: it matches names exactly, so it would also stub a linked interface the guest
    /// imports at an older patch version (`@0.2.6`) instead of letting semver match it.
    pub fn linker_for(&self, component: &Component) -> Result<Linker<AdapterState>> {
        use wasmtime::component::types::ComponentItem;
        let engine = &self.0.engine;
        let mut linker = self.0.linker.clone();
        for (name, import) in component.component_type().imports(engine) {
            let ComponentItem::ComponentInstance(instance) = import.ty else { continue };
            let unversioned = name.split('@').next().unwrap_or(name);
            if LINKED.contains(&unversioned) || unversioned.starts_with("relay:adapter/") {
                continue;
            }
            let mut stub = linker.instance(name)?;
            for (item, export) in instance.exports(engine) {
                match export.ty {
                    ComponentItem::ComponentFunc(_) => {
                        let what = format!("{unversioned}#{item}");
                        stub.func_new(item, move |_, _, _, _| Err(WasiDenied(what.clone()).into()))?;
                    }
                    // A resource of a linked interface seen here is a `use` of it (pollable,
                    // streams, io error): it is already defined, and a stub would not match.
                    ComponentItem::Resource(_) if LINKED_RESOURCES.contains(&item) => {}
                    ComponentItem::Resource(_) => {
                        stub.resource(item, wasmtime::component::ResourceType::host::<()>(), |_, _| Ok(()))?;
                    }
                    _ => {}
                }
            }
        }
        Ok(linker)
    }

    /// The host's wall-clock bound on one adapter call.
    pub fn wall_timeout(&self) -> Duration {
        self.0.limits.wall_timeout
    }

    pub fn limits(&self) -> AdapterLimits {
        self.0.limits
    }

    pub fn store(&self, plugin: &str, request_id: &str) -> Store<AdapterState> {
        let state = AdapterState {
            // Belt and braces: sockets are not linked at all (see `link_wasi`).
            wasi: WasiCtx::builder().allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false).build(),
            table: {
                let mut t = ResourceTable::new();
                t.set_max_capacity(MAX_WASI_RESOURCES);
                t
            },
            limits: Limiter {
                cap: StoreLimitsBuilder::new()
                    .memory_size(self.0.limits.memory as usize)
                    .instances(4)
                    .tables(16)
                    .memories(4)
                    .trap_on_grow_failure(true)
                    .build(),
                memory: 0,
            },
            plugin: plugin.into(),
            request_id: request_id.into(),
            log_lines: 0,
            call_wall: Instant::now(),
            cpu_mark: None,
        };
        let mut store = Store::new(&self.0.engine, state);
        store.limiter(|s| &mut s.limits);
        // Data one call may hand back to the host (strings and lists, aliases counted each
        // time): no more than the instance could hold. wasmtime's default is 128 MiB.
        store.set_hostcall_fuel(usize::try_from(self.0.limits.memory).unwrap_or(usize::MAX));
        // The epoch deadline is wall time; this turns it into a CPU bound without reading
        // the thread's CPU clock (a syscall) on every call. When a call has run its budget
        // in wall time, the callback marks the thread's CPU time and looks again a quarter
        // budget later: the share of the core the call got since the mark, times its wall
        // time, estimates the CPU it has used. A call that had the core to itself is cut at
        // about 1.25 times its budget; one that shared a busy core runs on until its
        // estimate reaches the budget, or WALL_FACTOR times the budget in wall time.
        let budget = self.0.limits.call_timeout;
        store.epoch_deadline_callback(move |mut ctx| {
            let s = ctx.data_mut();
            let wall = s.call_wall.elapsed();
            if wall >= budget * WALL_FACTOR {
                return Ok(UpdateDeadline::Interrupt);
            }
            let Some((cpu0, at)) = s.cpu_mark else {
                s.cpu_mark = Some((thread_cpu(), Instant::now()));
                return Ok(UpdateDeadline::Continue(ticks(budget / 4)));
            };
            let share =
                (thread_cpu().saturating_sub(cpu0).as_secs_f64() / at.elapsed().as_secs_f64().max(1e-6)).min(1.0);
            let used = wall.mul_f64(share);
            if used >= budget {
                return Ok(UpdateDeadline::Interrupt);
            }
            Ok(UpdateDeadline::Continue(ticks(budget - used)))
        });
        store.set_epoch_deadline(self.0.deadline_ticks);
        store
    }

    /// Start a call: the full CPU budget from now, a fresh log allowance, and the request
    /// the adapter's log lines belong to.
    pub fn begin_call(&self, store: &mut Store<AdapterState>, request_id: &Arc<str>) {
        store.set_epoch_deadline(self.0.deadline_ticks);
        let s = store.data_mut();
        s.log_lines = 0;
        s.call_wall = Instant::now();
        s.cpu_mark = None;
        s.request_id = request_id.clone();
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_millis().div_ceil(EPOCH_TICK.as_millis()) as u64).max(1)
}

/// A WASI function an adapter may not use was called (a blocking poll, a timer, a socket).
#[derive(Debug, thiserror::Error)]
#[error("{0} is not available to adapters: an adapter may not block, sleep or do I/O")]
pub struct WasiDenied(String);

/// The resources of the interfaces `link_wasi` links.
const LINKED_RESOURCES: [&str; 8] = [
    "pollable",
    "input-stream",
    "output-stream",
    "error",
    "descriptor",
    "directory-entry-stream",
    "terminal-input",
    "terminal-output",
];

/// The WASI interfaces `link_wasi` links (some functions as traps), without versions.
const LINKED: [&str; 22] = [
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:filesystem/preopens",
    "wasi:filesystem/types",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp-create-socket",
];

struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

fn io_table(s: &mut AdapterState) -> &mut ResourceTable {
    &mut s.table
}

/// Link only the WASI a Rust std guest for wasm32-wasip2 imports to instantiate, none of
/// which can block or reach outside the store: environment and arguments (empty), exit,
/// stdio (stdin closed, stdout and stderr a sink), terminals (none), random, the clocks'
/// readings, the filesystem with nothing preopened, and streams over those. Everything that
/// could wait is replaced by a function that traps: `poll`, `pollable.block`, and the
/// monotonic clock's timers (so `std::thread::sleep` traps at once). Sockets are refused:
/// creating one answers `access-denied` without making an OS socket, and every other
/// socket or name-lookup import traps (`Engine::linker_for`).
fn link_wasi(l: &mut Linker<AdapterState>) -> Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, io, random};
    use wasmtime_wasi::random::{WasiRandom, WasiRandomView};

    io::error::add_to_linker::<AdapterState, Io>(l, io_table)?;
    io::poll::add_to_linker::<AdapterState, Io>(l, io_table)?;
    io::streams::add_to_linker::<AdapterState, Io>(l, io_table)?;
    clocks::wall_clock::add_to_linker::<AdapterState, WasiClocks>(l, <AdapterState as WasiClocksView>::clocks)?;
    clocks::monotonic_clock::add_to_linker::<AdapterState, WasiClocks>(l, <AdapterState as WasiClocksView>::clocks)?;
    let rnd = <AdapterState as WasiRandomView>::random;
    random::random::add_to_linker::<AdapterState, WasiRandom>(l, rnd)?;
    random::insecure::add_to_linker::<AdapterState, WasiRandom>(l, rnd)?;
    random::insecure_seed::add_to_linker::<AdapterState, WasiRandom>(l, rnd)?;
    let c = <AdapterState as WasiCliView>::cli;
    cli::exit::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::environment::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::stdin::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::stdout::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::stderr::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::terminal_input::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::terminal_output::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::terminal_stdin::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::terminal_stdout::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    cli::terminal_stderr::add_to_linker::<AdapterState, WasiCli>(l, c)?;
    let fs = <AdapterState as WasiFilesystemView>::filesystem;
    filesystem::preopens::add_to_linker::<AdapterState, WasiFilesystem>(l, fs)?;
    filesystem::types::add_to_linker::<AdapterState, WasiFilesystem>(l, fs)?;

    l.allow_shadowing(true);
    let mut trap = |instance: &'static str, funcs: &[&'static str]| -> Result<()> {
        let mut i = l.instance(instance)?;
        for &f in funcs {
            i.func_new(f, move |_, _, _, _| Err(WasiDenied(format!("{instance}#{f}")).into()))?;
        }
        Ok(())
    };
    trap("wasi:io/poll@0.2.12", &["poll", "[method]pollable.block"])?;
    trap("wasi:clocks/monotonic-clock@0.2.12", &["subscribe-duration", "subscribe-instant"])?;
    l.allow_shadowing(false);
    for (instance, func) in [
        ("wasi:sockets/tcp-create-socket@0.2.12", "create-tcp-socket"),
        ("wasi:sockets/udp-create-socket@0.2.12", "create-udp-socket"),
    ] {
        l.instance(instance)?.func_new(func, |_, _, _, results| {
            results[0] = Val::Result(Err(Some(Box::new(Val::Enum("access-denied".into())))));
            Ok(())
        })?;
    }
    Ok(())
}

/// A label for `relay_plugin_traps_total{reason}`.
pub fn trap_reason(e: &wasmtime::Error) -> &'static str {
    if e.downcast_ref::<WasiDenied>().is_some() {
        return "wasi_denied";
    }
    if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        return match trap {
            wasmtime::Trap::Interrupt => "cpu_limit",
            wasmtime::Trap::UnreachableCodeReached => "panic",
            wasmtime::Trap::StackOverflow => "stack_overflow",
            _ => "trap",
        };
    }
    let text = format!("{e:#}");
    if text.contains("growing memory") || text.contains("memory size") || text.contains("resource limit") {
        return "memory_limit";
    }
    "error"
}
