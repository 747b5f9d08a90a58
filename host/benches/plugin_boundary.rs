//! Micro-benchmarks of the plugin boundary, without the network: what one request costs in
//! the adapters (transform-request + transform-response), what one stream event costs, what
//! a stream costs pushed one call per event or one call per upstream read (the events
//! framed from one read go in one batch), and what one open stream holds in memory, for
//! the instance strategies the host can run
//! (a fresh instance per call, or warm reused instances; an instance per stream, or streams
//! sharing one). `make bench` runs it after the load benchmark; `cargo bench -p relay`
//! alone needs the adapters built (`make build`).
//!
//! Figures are medians over batches, in wall time on one thread and in the thread's CPU
//! time. They change with the machine; compare the rows of one run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use relay::adapter::{Adapter, AdapterLimits, Engine, Loader};
use relay::metrics::Metrics;
use relay::model::{CallContext, Endpoint, StreamEvent, UpstreamResponse};

const BATCHES: usize = 15;

/// A 1.9 KB chat request: a system prompt, a few turns, sampling parameters.
fn chat_request(stream: bool) -> String {
    let turn = "Tell me about the history of the printing press in Europe, and keep it short please. ";
    serde_json::json!({
        "model": "bench-model",
        "stream": stream,
        "max_tokens": 256,
        "temperature": 0.7,
        "top_p": 0.9,
        "messages": [
            {"role": "system", "content": turn.repeat(4)},
            {"role": "user", "content": turn.repeat(5)},
            {"role": "assistant", "content": turn.repeat(5)},
            {"role": "user", "content": turn.repeat(6)},
        ],
    })
    .to_string()
}

fn openai_response() -> String {
    serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_764_000_000, "model": "bench-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the bench! ".repeat(20)},
            "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 400, "completion_tokens": 80, "total_tokens": 480},
    })
    .to_string()
}

fn anthropic_response() -> String {
    serde_json::json!({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "bench-model",
        "content": [{"type": "text", "text": "Hello from the bench! ".repeat(20)}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 400, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
            "output_tokens": 80, "service_tier": "standard"},
    })
    .to_string()
}

/// Anthropic's events for a 20-delta text answer, as its Messages API streams them.
fn anthropic_events() -> Vec<StreamEvent> {
    let ev = |name: &str, data: serde_json::Value| StreamEvent { event: Some(name.into()), data: data.to_string() };
    let mut v = vec![
        ev(
            "message_start",
            serde_json::json!({"type": "message_start", "message": {"id": "msg_bench", "type": "message",
                "role": "assistant", "model": "bench-model", "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": {"input_tokens": 400, "output_tokens": 1}}}),
        ),
        ev(
            "content_block_start",
            serde_json::json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for i in 0..20 {
        v.push(ev(
            "content_block_delta",
            serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": format!("word{i} ")}}),
        ));
    }
    v.push(ev("content_block_stop", serde_json::json!({"type": "content_block_stop", "index": 0})));
    v.push(ev(
        "message_delta",
        serde_json::json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": 20}}),
    ));
    v.push(ev("message_stop", serde_json::json!({"type": "message_stop"})));
    v
}

fn ctx(stream: bool) -> CallContext {
    CallContext {
        request_id: "bench-0001".into(),
        endpoint: Endpoint::ChatCompletions,
        model: "bench-model".into(),
        stream,
        include_usage: stream,
        settings: Vec::new(),
    }
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn rss_bytes() -> u64 {
    relay::metrics::resident_memory_bytes()
}

/// Median wall and CPU µs per iteration of `f`, over `BATCHES` batches of `n`.
async fn measure(n: usize, mut f: impl AsyncFnMut()) -> (f64, f64) {
    for _ in 0..n / 4 {
        f().await;
    }
    let (mut wall, mut cpu) = (Vec::new(), Vec::new());
    for _ in 0..BATCHES {
        let (t, c) = (Instant::now(), thread_cpu());
        for _ in 0..n {
            f().await;
        }
        wall.push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        cpu.push((thread_cpu() - c).as_secs_f64() * 1e6 / n as f64);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut wall), median(&mut cpu))
}

struct Strategy {
    name: &'static str,
    uses: u32,
    streams: u32,
}

const STRATEGIES: [Strategy; 2] = [
    Strategy { name: "fresh instance per call / per stream", uses: 1, streams: 1 },
    Strategy { name: "warm instances, 32 streams per instance", uses: 1000, streams: 32 },
];

async fn load(strategy: &Strategy, name: &str) -> Arc<Adapter> {
    let engine = Engine::new(AdapterLimits {
        instances: 12_000,
        instance_uses: strategy.uses,
        streams_per_instance: strategy.streams,
        ..AdapterLimits::default()
    })
    .expect("engine");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins.d");
    let loader = Loader::new(engine, None, Arc::new(Metrics::default())).expect("loader");
    let file = dir.join(format!("{name}.wasm"));
    match loader.load(&file).await {
        Ok(p) => Arc::new(p),
        Err(e) => panic!("cannot load {} (run `make build` first): {e:#}", file.display()),
    }
}

fn row(label: &str, (wall, cpu): (f64, f64)) {
    println!("| {label:<58} | {wall:>9.1} | {cpu:>9.1} |");
}

/// `PLUGIN_BENCH_PROFILE=event|request`: one loop for ~10 s, for a profiler to attach to.
async fn profile(what: &str) {
    let p = load(&STRATEGIES[1], "anthropic").await;
    let events = anthropic_events();
    let (request, response) =
        (chat_request(false), UpstreamResponse { status: 200, headers: Vec::new(), body: anthropic_response() });
    let c = ctx(what == "event");
    let mut session = p.open_stream(&c).await.expect("open");
    session.push(events[..2].to_vec()).await.expect("push");
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        for _ in 0..1000 {
            if what == "event" {
                session.push(vec![events[2].clone()]).await.expect("push");
            } else {
                p.transform_request(&c, &request).await.expect("transform_request");
                p.transform_response(&c, &response).await.expect("transform_response");
            }
        }
    }
}

async fn run() {
    if let Ok(what) = std::env::var("PLUGIN_BENCH_PROFILE") {
        return profile(&what).await;
    }
    let request = chat_request(false);
    let stream_request = chat_request(true);
    let upstream = |body: String| UpstreamResponse { status: 200, headers: Vec::new(), body };
    let (openai_resp, anthropic_resp) = (upstream(openai_response()), upstream(anthropic_response()));
    let events = anthropic_events();
    // The same stream as 5 upstream reads of 5 events each.
    let reads: Vec<Vec<StreamEvent>> = events.chunks(5).map(<[StreamEvent]>::to_vec).collect();

    // With a 0.1 adapter a batch is pushed one event at a time by the host.
    let mut contracts = Vec::new();
    for name in ["openai", "anthropic"] {
        contracts.push(format!("{name} (contract {})", load(&STRATEGIES[1], name).await.contract().version()));
    }
    println!("adapters: {}", contracts.join(", "));
    println!();
    println!("| per call (median of {BATCHES} batches)                              |   wall µs |    CPU µs |");
    println!("| {:-<58} | --------: | --------: |", "");
    for s in &STRATEGIES {
        println!("| **{}** {:<width$} |           |           |", s.name, "", width = 54 - s.name.len());
        for (name, resp) in [("openai", &openai_resp), ("anthropic", &anthropic_resp)] {
            let p = load(s, name).await;
            let c = ctx(false);
            let fig = measure(2000, async || {
                p.transform_request(&c, &request).await.expect("transform_request");
                p.transform_response(&c, resp).await.expect("transform_response");
            })
            .await;
            row(&format!("{name}: one request (transform-request + transform-response)"), fig);
        }
        let p = load(s, "anthropic").await;
        let c = ctx(true);
        let fig = measure(300, async || {
            p.transform_request(&c, &stream_request).await.expect("transform_request");
            let mut session = p.open_stream(&c).await.expect("open");
            for e in &events {
                session.push(vec![e.clone()]).await.expect("push");
            }
            session.finish().await.expect("finish");
        })
        .await;
        row(&format!("anthropic: one 20-delta stream ({} events), request included", events.len()), fig);
        // The stream alone (open, events, finish), one push per event vs one per read.
        let fig = measure(300, async || {
            let mut session = p.open_stream(&c).await.expect("open");
            for e in &events {
                session.push(vec![e.clone()]).await.expect("push");
            }
            session.finish().await.expect("finish");
        })
        .await;
        row(&format!("anthropic: that stream, one push per event ({} pushes)", events.len()), fig);
        let fig = measure(300, async || {
            let mut session = p.open_stream(&c).await.expect("open");
            for read in &reads {
                session.push(read.clone()).await.expect("push");
            }
            session.finish().await.expect("finish");
        })
        .await;
        row(&format!("anthropic: that stream, one push per read ({} reads of 5)", reads.len()), fig);
        // One long-lived session: the cost of an event alone.
        let mut session = p.open_stream(&c).await.expect("open");
        session.push(events[..2].to_vec()).await.expect("push");
        let delta = &events[2];
        let fig = measure(20_000, async || {
            session.push(vec![delta.clone()]).await.expect("push");
        })
        .await;
        row("anthropic: one stream event (content_block_delta)", fig);
    }

    println!();
    println!("| memory held by open streams (anthropic, after 2 events each)  | KiB per stream |");
    println!("| {:-<61} | -------------: |", "");
    for s in &STRATEGIES {
        let p = load(s, "anthropic").await;
        let c = ctx(true);
        let n = 2000;
        let before = rss_bytes();
        let mut sessions = Vec::with_capacity(n);
        for _ in 0..n {
            let mut session = p.open_stream(&c).await.expect("open");
            session.push(events[..2].to_vec()).await.expect("push");
            sessions.push(session);
        }
        let held = rss_bytes().saturating_sub(before) as f64 / n as f64 / 1024.0;
        println!("| {:<61} | {held:>14.1} |", format!("{} ({n} streams)", s.name));
        drop(sessions);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(run());
}
