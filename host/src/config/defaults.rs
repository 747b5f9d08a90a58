//! The named defaults of every bound and setting, each with the reason for its value, and
//! the outer limits a configured value must stay within.

use std::time::Duration;

/// The seed's defaults: fail fast while connecting, give a 10-minute response 5 minutes
/// of margin, and bound the whole request by the same 15 minutes.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A resolver that has not answered in 5 s is down (glibc waits 5 s per try too); the
/// lookup is its own stage so a slow resolver cannot eat the connect bound.
pub const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_RESPONSE_HEADER_TIMEOUT: Duration = Duration::from_secs(900);
/// Vendors send keep-alive pings every few seconds; 5 minutes of silence is a dead stream.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_TOTAL_TIMEOUT: Duration = Duration::from_secs(900);
/// A client that cannot upload its prompt in 30 s is stuck, not slow.
pub const DEFAULT_CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time for in-flight streams to finish after SIGTERM before they are ended.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Longest accepted bound: a week is already far past any sane request.
pub(super) const MAX_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;
/// Tries of one channel per request (`[retry] attempts`): 1, so a failed attempt moves
/// on to the next channel at once, as before retries existed; set 2-3 to ride out a
/// one-off 5xx, 429 or dropped connection on the same channel.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 1;
/// Most tries of one channel accepted: more only hammers a vendor that is down.
pub(super) const MAX_RETRY_ATTEMPTS: u32 = 10;
/// First wait before a same-channel retry; doubled each time up to `backoff_max`, each
/// wait drawn between half and all of it (jitter), so retries of many requests spread out.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(250);
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(4);
/// Waiting between attempts one request may spend in all (backoffs and honoured
/// `Retry-After`s); a wait is never taken past the request's `timeouts.total` either.
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(10);
/// Longest vendor cooldown (`Retry-After`, rate-limit reset headers) honoured: a vendor
/// asking for an hour gets a minute, then is tried again.
pub const DEFAULT_MAX_COOLDOWN: Duration = Duration::from_secs(60);
/// Shortest accepted duration: 1 ms, the timers' resolution.
pub(super) const MIN_DURATION_SECS: f64 = 0.001;

/// A vendor stream event the adapter cannot read is skipped and counted: one garbled event
/// should not cost the client a whole answer (the count and the log show it).
pub const DEFAULT_MALFORMED_EVENTS: super::MalformedEvents = super::MalformedEvents::Skip;

/// Unset, a channel passes through natively every client API its adapter speaks natively
/// (`native` in the adapter's info): a vendor that speaks an API answers it best itself.
pub const DEFAULT_NATIVE: Option<super::Native> = None;

/// Large enough for long multimodal prompts with inline images; bounded so one client
/// cannot make the relay buffer gigabytes.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 32 * 1024 * 1024;
/// A non-stream vendor response is buffered whole for the adapter; same reasoning.
pub const DEFAULT_MAX_RESPONSE_BODY: u64 = 32 * 1024 * 1024;
/// One SSE event; vendors send a few KiB at most, tool-call arguments included.
pub const DEFAULT_MAX_STREAM_EVENT: usize = 1024 * 1024;
/// Idle upstream connections are closed after this (vendors' own idle cut is ~60-120 s).
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream host; enough to absorb bursts without hoarding sockets.
pub const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 64;
/// Per-instance linear memory cap for an adapter: JSON mapping needs a few MiB at most.
pub const DEFAULT_PLUGIN_MEMORY: u64 = 64 * 1024 * 1024;
/// CPU budget per adapter call; a mapping takes microseconds, a loop is cut at this.
pub const DEFAULT_PLUGIN_CALL_TIMEOUT: Duration = Duration::from_millis(100);
/// Adapter instances alive at once: one per open stream plus transforms in progress; 10,000
/// covers the 5,000-stream target twice over, and costs only address space until used.
pub const DEFAULT_PLUGIN_INSTANCES: u32 = 10_000;
/// Calls (or, for stream hosts, streams) one adapter instance serves before a fresh one
/// replaces it: reuse saves ~30 µs of instantiation per call; a bound keeps any state an
/// adapter leaks from piling up.
pub const DEFAULT_PLUGIN_INSTANCE_USES: u32 = 1_000;
/// Streams sharing one adapter instance: 5,000 streams fit in ~160 instances instead of
/// 5,000, and a trap ends at most this many streams.
pub const DEFAULT_PLUGIN_STREAMS_PER_INSTANCE: u32 = 32;
/// Time for a new connection to deliver its first request head, on every protocol (HTTP/1
/// head, or HTTP/2 preface and first stream); also the HTTP/1 head timer: a client that
/// cannot send a few KiB of headers in 30 s is stuck or hostile.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// A keep-alive connection with no request in flight is closed after this; 60 s matches
/// common load balancers' idle cut, so the relay is not the first to drop a pooled socket.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A write to a client that makes no progress for this long ends the connection: a client
/// that stopped reading (zero window) no longer holds its stream until the total deadline.
/// 60 s leaves a slow mobile link, which still drains, far inside the bound.
pub const DEFAULT_CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// After the relay closes a connection it keeps reading and discarding what the client still
/// sends for up to this long (nginx's lingering close), so a client uploading a body that was
/// refused early reads the answer instead of a reset. Nothing is buffered, so the only cost
/// is the socket for this long; 5 s drains ~50 MB even at 100 Mbit/s.
pub const DEFAULT_LINGERING_CLOSE: Duration = Duration::from_secs(5);
/// Client connections served at once. Each costs a socket, a task and a few KiB of buffers;
/// 10,000 is twice the 5,000-stream target and fits the usual hard `RLIMIT_NOFILE` (raised to
/// at start) with room for vendor connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Streams one HTTP/2 connection may have open: one client cannot multiply itself past this.
pub const DEFAULT_HTTP2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// HTTP/2 pings on a connection silent this long; a peer that does not answer in
/// `HTTP2_KEEP_ALIVE_TIMEOUT` is gone and its connection is closed.
pub const DEFAULT_HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// Request bodies buffered at once, synchronous requests and queued jobs together: 32
/// bodies of the 32 MiB maximum, or thousands of ordinary prompts; past it new bodies get
/// 503 with `Retry-After` instead of the relay growing without bound.
pub const DEFAULT_MAX_INFLIGHT_BODY_BYTES: u64 = 1024 * 1024 * 1024;
/// Default wall-clock bound on one adapter call, as a multiple of `plugin_call_timeout`: the
/// same 20x after which the CPU bound cuts a call that starved for CPU, so a legitimate call
/// on an overloaded host is never cut first by this one.
pub const DEFAULT_PLUGIN_WALL_TIMEOUT_FACTOR: u32 = 20;
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";
pub const DEFAULT_PLUGIN_DIR: &str = "plugins.d";
/// The relay's own state (compile cache, job store), next to its config by default.
pub const DEFAULT_DATA_DIR: &str = ".relay";

/// Edits apply by themselves; operators who want explicit reloads (a ConfigMap mount,
/// config management) turn it off and send SIGHUP.
pub const DEFAULT_WATCH: bool = true;

/// Async jobs: the store's folder under `data_dir`.
pub const DEFAULT_JOBS_DIR: &str = "jobs";
/// A finished job's result is kept a day: time to collect it, not a long-term archive.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Expired jobs are purged this often; an expired job is at most this late to go.
pub const DEFAULT_JOB_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Jobs running at once; each holds one vendor call, like a synchronous request.
pub const DEFAULT_JOBS_MAX_RUNNING: usize = 64;
/// Jobs waiting for a run slot; past it a submission gets 429. Each holds its body in memory.
pub const DEFAULT_JOBS_MAX_QUEUED: usize = 1024;
/// Stored output of one job; a long answer is a few hundred KiB of chunks.
pub const DEFAULT_JOB_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Jobs one client key may hold (queued, running, or finished and not yet purged): a job
/// every 90 s around the clock at the default 24 h retention, and less than the queue, so
/// one key cannot fill the queue or the store for every other key.
pub const DEFAULT_JOBS_MAX_PER_OWNER: u64 = 1000;
/// Estimated bytes the job store may hold: 64 jobs at the full per-job output bound, far
/// more than typical answers; past it submissions get 507 and running jobs fail.
pub const DEFAULT_JOB_MAX_STORE_BYTES: u64 = 1024 * 1024 * 1024;
/// Longest retention accepted: a year.
pub(super) const MAX_RETENTION_SECS: f64 = 365.0 * 24.0 * 3600.0;
