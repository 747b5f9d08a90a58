//! Async mode end to end: `Prefer: respond-async`, polling, resumable events, cancel,
//! restart, ownership, retention and the queue bound, through the real relay binary and the
//! real openai.wasm against the mock vendor.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use relay_tests::*;
use serde_json::{Value, json};

const OTHER_KEY: &str = "sk-test-other";
/// A stream slow enough to watch: 20 pieces, 100 ms apart.
const SLOW: &str = "headers = { \"x-mock-chunks\" = \"20\", \"x-mock-chunk-delay-ms\" = \"100\" }";
/// A stream that runs for 10 s unless stopped.
const VERY_SLOW: &str = "headers = { \"x-mock-chunks\" = \"100\", \"x-mock-chunk-delay-ms\" = \"100\" }";

async fn mock() -> Mock {
    Mock::start(Options::default()).await.expect("mock starts")
}

fn other_token() -> String {
    format!("[[token]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\nmodels = [\"*\"]\n")
}

fn setup_config(m: &Mock, jobs: &str) -> String {
    format!(
        "{}{}{}{jobs}\n{}{}",
        channel("fast", &m.base_url(), "demo-gpt, text-embedding-3-small", ""),
        channel("slow", &m.base_url(), "slow-gpt", SLOW),
        channel("very-slow", &m.base_url(), "very-slow-gpt", VERY_SLOW),
        token_block(CLIENT_KEY, "*"),
        other_token()
    )
}

async fn start(config: &str) -> TestRelay {
    TestRelay::start(Setup { config, adapters: &["openai"], env: &[] }).await
}

async fn submit(relay: &TestRelay, path: &str, body: &Value) -> Answer {
    relay.request_with(Method::POST, path, Some(CLIENT_KEY), &[("prefer", "respond-async")], &body.to_string()).await
}

/// Submit a chat job and return its id, checking the 202 answer's shape.
async fn submit_chat(relay: &TestRelay, body: &Value) -> String {
    let a = submit(relay, "/v1/chat/completions", body).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let v = a.json();
    let id = v["id"].as_str().expect("id").to_string();
    assert_eq!(a.headers["location"], format!("/v1/jobs/{id}").as_str());
    assert_eq!(v["object"], "relay.job");
    assert!(v["created_at"].as_u64().is_some() && v["status"].is_string(), "{v}");
    id
}

async fn job(relay: &TestRelay, key: &str, id: &str) -> Answer {
    relay.request(Method::GET, &format!("/v1/jobs/{id}"), Some(key), "").await
}

/// Poll the job until `done` holds; the last reading.
async fn poll(relay: &TestRelay, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + within;
    loop {
        let a = job(relay, CLIENT_KEY, id).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let v = a.json();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < end, "job never reached the state: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(relay: &TestRelay, id: &str) -> Value {
    poll(relay, id, Duration::from_secs(20), |v| {
        matches!(v["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
    })
    .await
}

/// One SSE event from the job's event stream: its `id:` (none for the terminal event) and data.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    id: Option<u64>,
    data: String,
}

fn parse_events(text: &str) -> Vec<Ev> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let id = e.lines().find_map(|l| l.strip_prefix("id: ")).and_then(|v| v.parse().ok());
            let data = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<Vec<_>>().join("\n");
            Ev { id, data }
        })
        .collect()
}

/// Read `/v1/jobs/{id}/events` (after `last`), stopping after `stop_after` id'd events if
/// given: the client hangs up mid-way.
async fn read_events(relay: &TestRelay, id: &str, last: Option<u64>, stop_after: Option<usize>) -> Vec<Ev> {
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http::<Full<Bytes>>();
    let mut b = Request::get(relay.url(&format!("/v1/jobs/{id}/events")))
        .header("authorization", format!("Bearer {CLIENT_KEY}"));
    if let Some(n) = last {
        b = b.header("last-event-id", n.to_string());
    }
    let resp = client.request(b.body(Full::new(Bytes::new())).unwrap()).await.expect("relay answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.expect("frame").into_data() {
                text.push_str(&String::from_utf8_lossy(&d));
            }
            let complete = &text[..text.rfind("\n\n").map_or(0, |i| i + 2)];
            if stop_after.is_some_and(|n| parse_events(complete).iter().filter(|e| e.id.is_some()).count() >= n) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("events stream ended in time");
    let complete = text[..text.rfind("\n\n").map_or(0, |i| i + 2)].to_string();
    let mut evs = parse_events(&complete);
    if let Some(n) = stop_after {
        evs.truncate(n);
    }
    evs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_poll_and_replay_match_the_synchronous_answer() {
    let m = mock().await;
    let relay = start(&setup_config(&m, "")).await;
    let body = chat_body("demo-gpt", "Hello async", false);
    let sync = relay.chat(&body).await;
    assert_eq!(sync.status, StatusCode::OK);
    let sync = sync.json();

    let id = submit_chat(&relay, &body).await;
    let v = finished(&relay, &id).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let r = &v["result"];
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["choices"][0]["message"], sync["choices"][0]["message"]);
    assert_eq!(r["choices"][0]["finish_reason"], sync["choices"][0]["finish_reason"]);
    assert_eq!(r["usage"], sync["usage"]);
    assert_eq!(r["model"], sync["model"]);
    assert_eq!(v["progress"]["completion_tokens"], sync["usage"]["completion_tokens"]);
    let events = v["progress"]["events"].as_u64().unwrap();
    assert!(events > 2, "{v}");
    assert!(v["progress"]["last_event_at"].as_f64().is_some() && v["progress"]["elapsed_seconds"].is_number());

    // The vendor was asked for a stream with usage, whatever the client sent.
    let got = m.stats.received();
    assert_eq!(got.last().unwrap().body["stream"], true);
    assert_eq!(got.last().unwrap().body["stream_options"]["include_usage"], true);

    // A finished job replays its whole output: ids 1..=n, then [DONE].
    let evs = read_events(&relay, &id, None, None).await;
    let ids: Vec<u64> = evs.iter().filter_map(|e| e.id).collect();
    assert_eq!(ids, (1..=events).collect::<Vec<_>>());
    assert_eq!(evs.last().unwrap(), &Ev { id: None, data: "[DONE]".into() });
    let data: Vec<String> = evs.iter().map(|e| e.data.clone()).collect();
    assert_eq!(joined_content(&data), sync["choices"][0]["message"]["content"].as_str().unwrap());

    // Embeddings run as a job too, with the synchronous answer as the result.
    let eb = json!({"model": "text-embedding-3-small", "input": "hi"});
    let sync_e = relay.request(Method::POST, "/v1/embeddings", Some(CLIENT_KEY), &eb.to_string()).await;
    assert_eq!(sync_e.status, StatusCode::OK, "{}", sync_e.text());
    let a = submit(&relay, "/v1/embeddings", &eb).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let eid = a.json()["id"].as_str().unwrap().to_string();
    let v = finished(&relay, &eid).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    assert_eq!(v["result"]["data"], sync_e.json()["data"]);

    // Listing: newest first, paginated like OpenAI lists.
    let list = relay.request(Method::GET, "/v1/jobs?limit=1", Some(CLIENT_KEY), "").await.json();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], eid.as_str());
    assert_eq!(list["has_more"], true);
    let next = relay.request(Method::GET, &format!("/v1/jobs?limit=1&after={eid}"), Some(CLIENT_KEY), "").await.json();
    assert_eq!(next["data"][0]["id"], id.as_str());
    assert_eq!(next["has_more"], false);

    // A client error is refused at once, not made a job.
    let a = submit(&relay, "/v1/chat/completions", &json!({"model": "demo-gpt"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    let a = submit(&relay, "/v1/chat/completions", &chat_body("no-such-model", "x", false)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());

    // Another token sees none of it.
    for (method, path) in [
        (Method::GET, format!("/v1/jobs/{id}")),
        (Method::GET, format!("/v1/jobs/{id}/events")),
        (Method::DELETE, format!("/v1/jobs/{id}")),
    ] {
        let a = relay.request(method, &path, Some(OTHER_KEY), "").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {}", a.text());
        assert_eq!(a.openai_error().1, "not_found");
    }
    let list = relay.request(Method::GET, "/v1/jobs", Some(OTHER_KEY), "").await.json();
    assert_eq!(list["data"], json!([]));
    assert_eq!(relay.request(Method::GET, "/v1/jobs", None, "").await.status, StatusCode::UNAUTHORIZED);
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_jobs", &[("status", "succeeded")]), 2.0);
    assert!(metrics.gauge("relay_job_events_total") >= events as f64 + 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_grows_and_events_resume_without_gap_or_duplicate() {
    let m = mock().await;
    let relay = start(&setup_config(&m, "")).await;
    let id = submit_chat(&relay, &chat_body("slow-gpt", "one two three four five six seven", false)).await;

    let first = poll(&relay, &id, Duration::from_secs(10), |v| {
        v["status"] == "running" && v["progress"]["events"].as_u64().unwrap_or(0) >= 2
    })
    .await;
    let later = poll(&relay, &id, Duration::from_secs(10), |v| {
        v["progress"]["events"].as_u64().unwrap_or(0) > first["progress"]["events"].as_u64().unwrap() + 2
    })
    .await;
    assert_eq!(later["status"], "running", "{later}");
    assert!(
        later["progress"]["completion_tokens"].as_u64().unwrap()
            > first["progress"]["completion_tokens"].as_u64().unwrap(),
        "{first} {later}"
    );

    // The client reads 5 events and hangs up, then resumes from the last id it saw.
    let head = read_events(&relay, &id, None, Some(5)).await;
    assert_eq!(head.iter().map(|e| e.id).collect::<Vec<_>>(), (1..=5).map(Some).collect::<Vec<_>>());
    let tail = read_events(&relay, &id, head.last().unwrap().id, None).await;
    assert_eq!(tail.last().unwrap().data, "[DONE]", "{tail:?}");
    let ids: Vec<u64> = tail.iter().filter_map(|e| e.id).collect();
    assert_eq!(ids[0], 6, "resume starts right after the last seen event");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "gap or duplicate: {ids:?}");

    // Together they are exactly the whole output.
    let v = finished(&relay, &id).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let whole = read_events(&relay, &id, None, None).await;
    let joined: Vec<Ev> = head.into_iter().chain(tail).collect();
    assert_eq!(joined, whole);
    let data: Vec<String> = whole.iter().map(|e| e.data.clone()).collect();
    assert_eq!(joined_content(&data), v["result"]["choices"][0]["message"]["content"].as_str().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_drops_the_upstream_and_gauges_return() {
    let m = mock().await;
    let config = format!("{}{}", channel("very-slow", &m.base_url(), "very-slow-gpt", VERY_SLOW), "[jobs]\n");
    let (relay, baseline) = relay_with_baseline(&config, &[]).await;
    let id = submit_chat(&relay, &chat_body("very-slow-gpt", "go on", false)).await;
    poll(&relay, &id, Duration::from_secs(10), |v| v["progress"]["events"].as_u64().unwrap_or(0) >= 2).await;
    assert!(m.stats.open_connections() > 0);

    let a = relay.request(Method::DELETE, &format!("/v1/jobs/{id}"), Some(CLIENT_KEY), "").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.json()["status"], "cancelled", "{}", a.text());
    let end = Instant::now() + Duration::from_secs(1);
    while m.stats.open_connections() > 0 {
        assert!(Instant::now() < end, "the vendor connection is still open 1 s after cancel");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let v = job(&relay, CLIENT_KEY, &id).await.json();
    assert_eq!(v["error"]["code"], "job_cancelled", "{v}");
    let evs = read_events(&relay, &id, None, None).await;
    assert!(evs.last().unwrap().data.contains("job_cancelled"), "{evs:?}");
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_jobs", &[("status", "cancelled")]), 1.0);
    assert_eq!(metrics.value("relay_jobs", &[("status", "running")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_fails_running_jobs_and_keeps_finished_ones() {
    let m = mock().await;
    let config = setup_config(&m, "");
    let relay = start(&config).await;
    let done = submit_chat(&relay, &chat_body("demo-gpt", "keep me", false)).await;
    let kept = finished(&relay, &done).await;
    assert_eq!(kept["status"], "succeeded");
    let cut = submit_chat(&relay, &chat_body("very-slow-gpt", "cut me", false)).await;
    poll(&relay, &cut, Duration::from_secs(10), |v| v["progress"]["events"].as_u64().unwrap_or(0) >= 2).await;

    // The process dies mid-job (SIGKILL) and starts again on the same data dir.
    let dir = relay.stop();
    let relay = TestRelay::start_in(dir, Setup { config: &config, adapters: &["openai"], env: &[] }).await.unwrap();
    let v = job(&relay, CLIENT_KEY, &cut).await.json();
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "job_interrupted", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("restarted while this job was running"), "{v}");
    let evs = read_events(&relay, &cut, None, None).await;
    assert!(evs.last().unwrap().data.contains("job_interrupted"), "{evs:?}");

    let v = job(&relay, CLIENT_KEY, &done).await.json();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"], kept["result"]);
    let evs = read_events(&relay, &done, None, None).await;
    assert_eq!(evs.last().unwrap().data, "[DONE]");
    assert_eq!(evs.len() as u64, kept["progress"]["events"].as_u64().unwrap() + 1);
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_jobs", &[("status", "failed")]), 1.0);
    assert_eq!(metrics.value("relay_jobs", &[("status", "succeeded")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_jobs_are_purged_after_retention() {
    let m = mock().await;
    let relay = start(&setup_config(&m, "[jobs]\nretention = 0.5\nsweep_interval = 0.1\n")).await;
    let id = submit_chat(&relay, &chat_body("demo-gpt", "short lived", false)).await;
    assert_eq!(finished(&relay, &id).await["status"], "succeeded");
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let a = job(&relay, CLIENT_KEY, &id).await;
        if a.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(Instant::now() < end, "the job was not purged: {}", a.text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = relay.request(Method::GET, "/v1/jobs", Some(CLIENT_KEY), "").await.json();
    assert_eq!(list["data"], json!([]));
    assert_eq!(relay.metrics().await.value("relay_jobs", &[("status", "succeeded")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_bound_answers_429_and_output_bound_fails_the_job() {
    let m = mock().await;
    let config = format!(
        "{}{}[jobs]\nmax_running = 1\nmax_queued = 1\nmax_bytes_per_job = 6000\n",
        channel("very-slow", &m.base_url(), "very-slow-gpt", VERY_SLOW),
        channel("fast", &m.base_url(), "demo-gpt", "")
    );
    let (relay, baseline) = relay_with_baseline(&config, &["demo-gpt"]).await;
    let running = submit_chat(&relay, &chat_body("very-slow-gpt", "first", false)).await;
    poll(&relay, &running, Duration::from_secs(10), |v| v["status"] == "running").await;
    let queued = submit_chat(&relay, &chat_body("demo-gpt", "second", false)).await;
    assert_eq!(job(&relay, CLIENT_KEY, &queued).await.json()["status"], "queued");
    let a = submit(&relay, "/v1/chat/completions", &chat_body("demo-gpt", "third", false)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
    assert_eq!(a.openai_error().1, "job_queue_full");

    // The running job passes 6000 bytes of output long before its end and fails; the
    // queued one then runs.
    let v = finished(&relay, &running).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "job_too_large", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("max_bytes_per_job"), "{v}");
    let v = finished(&relay, &queued).await;
    assert_eq!(v["status"], "succeeded", "{v}");

    // A queued job can be cancelled too; it never runs.
    let running = submit_chat(&relay, &chat_body("very-slow-gpt", "again", false)).await;
    poll(&relay, &running, Duration::from_secs(10), |v| v["status"] == "running").await;
    let queued = submit_chat(&relay, &chat_body("demo-gpt", "wait", false)).await;
    let a = relay.request(Method::DELETE, &format!("/v1/jobs/{queued}"), Some(CLIENT_KEY), "").await;
    assert_eq!(a.json()["status"], "cancelled", "{}", a.text());
    assert_eq!(finished(&relay, &running).await["status"], "failed");
    let v = job(&relay, CLIENT_KEY, &queued).await.json();
    assert_eq!((v["status"].as_str(), v["started_at"].is_null()), (Some("cancelled"), true), "{v}");
    relay.assert_back_to(baseline, Duration::from_secs(5)).await;
}

/// A job is one vendor request: its channel's `timeouts.total` cuts it, counted from the
/// job's start, not from its submission (time queued does not count).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_total_cuts_a_job_from_its_start() {
    let m = mock().await;
    let bounded = |name: &str, model: &str, shape: &str| {
        channel(name, &m.base_url(), model, &format!("{shape}\ntimeouts = {{ total = 1.5 }}"))
    };
    let config = format!(
        "[jobs]\nmax_running = 1\n{}{}{}",
        // 10 s of output: cut at 1.5 s.
        bounded("long", "long-gpt", VERY_SLOW),
        // 0.5 s of output, queued behind `long` for about 1.5 s first.
        bounded("short", "short-gpt", "headers = { \"x-mock-chunks\" = \"10\", \"x-mock-chunk-delay-ms\" = \"50\" }"),
        token_block(CLIENT_KEY, "*"),
    );
    let relay = start(&config).await;
    let long = submit_chat(&relay, &chat_body("long-gpt", "cut me", false)).await;
    let short = submit_chat(&relay, &chat_body("short-gpt", "wait, then run", false)).await;
    assert_eq!(job(&relay, CLIENT_KEY, &short).await.json()["status"], "queued");

    let v = finished(&relay, &long).await;
    assert_eq!(v["status"], "failed", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("total request timeout after 1.5 s on channel long"), "{v}");
    let ran = v["progress"]["elapsed_seconds"].as_f64().unwrap_or(0.0);
    assert!((1.4..6.0).contains(&ran), "cut after {ran} s, not at timeouts.total: {v}");

    let v = finished(&relay, &short).await;
    assert_eq!(v["status"], "succeeded", "time spent queued counted against timeouts.total: {v}");
    let started = v["started_at"].as_u64().unwrap_or(0);
    assert!(started > v["created_at"].as_u64().unwrap_or(u64::MAX), "it did wait in the queue: {v}");
}

/// `Prefer: respond-async` on `POST /v1/messages`: the key as `x-api-key`, a 202 job whose
/// result is the Message a synchronous request answers (bridged through chat here), the
/// `stream` of the body dropped; refusals in Anthropic's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messages_job_runs_whole_and_its_result_is_the_message() {
    let m = mock().await;
    let relay = start(&setup_config(&m, "")).await;
    let body = json!({"model": "demo-gpt", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "Hello async"}]});
    let headers = [("x-api-key", CLIENT_KEY), ("prefer", "respond-async")];
    let a = relay.request_with(Method::POST, "/v1/messages", None, &headers, &body.to_string()).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.text());
    let id = a.json()["id"].as_str().expect("id").to_string();
    let v = finished(&relay, &id).await;
    assert_eq!(v["status"], "succeeded", "{v}");
    let r = &v["result"];
    assert_eq!((r["type"].as_str(), r["role"].as_str()), (Some("message"), Some("assistant")), "{v}");
    assert_eq!(r["content"][0]["text"], "Hello from the demo upstream! You said: Hello async");
    assert_eq!(r["stop_reason"], "end_turn");
    assert!(v["progress"]["completion_tokens"].as_u64().is_some_and(|n| n > 0), "{v}");
    let sent = m.stats.received();
    let last = &sent.last().expect("the vendor was called").body;
    assert_ne!(last["stream"], true, "the job ran whole: {last}");

    // A wrong key: Anthropic's error, no job.
    let wrong = [("x-api-key", "sk-wrong"), ("prefer", "respond-async")];
    let a = relay.request_with(Method::POST, "/v1/messages", None, &wrong, &body.to_string()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        (a.json()["type"].as_str(), a.json()["error"]["type"].as_str()),
        (Some("error"), Some("authentication_error"))
    );
}
