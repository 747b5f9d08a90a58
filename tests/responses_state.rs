//! Responses state end to end: stored responses (retrieve, input items, delete, ownership),
//! `previous_response_id`, background mode (polling, cancel, a cut stream resumed with
//! `starting_after`, restart) and the store's bounds, through the real relay binary and the
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

fn config(m: &Mock, jobs: &str) -> String {
    format!(
        "{FAST_POOL}{}{}{}{jobs}\n{}[[token]]\nname = \"other\"\nkey = \"{OTHER_KEY}\"\nmodels = [\"*\"]\n",
        channel("fast", &m.base_url(), "demo-gpt", ""),
        channel("slow", &m.base_url(), "slow-gpt", SLOW),
        channel("very-slow", &m.base_url(), "very-slow-gpt", VERY_SLOW),
        token_block(CLIENT_KEY, "*"),
    )
}

async fn start(config: &str) -> (TestRelay, Gauges) {
    let relay = TestRelay::start(Setup { config, adapters: &["openai"], env: &[] }).await;
    let baseline = warm_baseline(&relay, &["demo-gpt"]).await;
    (relay, baseline)
}

async fn create(relay: &TestRelay, body: &Value) -> Answer {
    relay.request(Method::POST, "/v1/responses", Some(CLIENT_KEY), &body.to_string()).await
}

/// Create and expect 200; the Response object.
async fn created(relay: &TestRelay, body: &Value) -> Value {
    let a = create(relay, body).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let v = a.json();
    assert_eq!(v["object"], "response", "{v}");
    assert!(v["id"].as_str().is_some_and(|id| id.starts_with("resp_")), "{v}");
    v
}

async fn call(relay: &TestRelay, method: Method, key: &str, path: &str) -> Answer {
    relay.request(method, path, Some(key), "").await
}

async fn retrieve(relay: &TestRelay, id: &str) -> Answer {
    call(relay, Method::GET, CLIENT_KEY, &format!("/v1/responses/{id}")).await
}

fn output_text(v: &Value) -> String {
    let mut s = String::new();
    for item in v["output"].as_array().into_iter().flatten() {
        for part in item["content"].as_array().into_iter().flatten() {
            s.push_str(part["text"].as_str().unwrap_or(""));
        }
    }
    s
}

/// Poll `GET /v1/responses/{id}` until `done` holds; every status seen, and the last reading.
async fn poll(relay: &TestRelay, id: &str, done: impl Fn(&Value) -> bool) -> (Vec<String>, Value) {
    let end = Instant::now() + Duration::from_secs(20);
    let mut seen: Vec<String> = Vec::new();
    loop {
        let a = retrieve(relay, id).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let v = a.json();
        let status = v["status"].as_str().unwrap_or("?").to_string();
        if seen.last() != Some(&status) {
            seen.push(status);
        }
        if done(&v) {
            return (seen, v);
        }
        assert!(Instant::now() < end, "the response never reached the state: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One Responses SSE event: its `event:` name and its JSON.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    name: String,
    data: Value,
}

impl Ev {
    fn seq(&self) -> u64 {
        self.data["sequence_number"].as_u64().unwrap_or_else(|| panic!("no sequence_number: {self:?}"))
    }
}

fn parse(text: &str) -> Vec<Ev> {
    let complete = &text[..text.rfind("\n\n").map_or(0, |i| i + 2)];
    complete
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let name = e.lines().find_map(|l| l.strip_prefix("event: ")).unwrap_or("").to_string();
            let data = e.lines().filter_map(|l| l.strip_prefix("data: ")).collect::<Vec<_>>().join("\n");
            let data = serde_json::from_str(&data).unwrap_or_else(|_| panic!("event data is not JSON: {e:?}"));
            Ev { name, data }
        })
        .collect()
}

/// Send a request and read its event stream, hanging up after `stop_after` events if given.
async fn events(
    relay: &TestRelay,
    method: Method,
    path: &str,
    body: Option<&Value>,
    stop_after: Option<usize>,
) -> Vec<Ev> {
    let client = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http::<Full<Bytes>>();
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let req = Request::builder()
        .method(method)
        .uri(relay.url(path))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap();
    let resp = client.request(req).await.expect("relay answers");
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = resp.into_body();
    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(d) = frame.expect("frame").into_data() {
                text.push_str(&String::from_utf8_lossy(&d));
            }
            if stop_after.is_some_and(|n| parse(&text).len() >= n) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("the event stream ended in time");
    let mut evs = parse(&text);
    if let Some(n) = stop_after {
        evs.truncate(n);
    }
    evs
}

fn assert_not_found(a: &Answer, id: &str) {
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
    let (message, _) = a.openai_error();
    assert!(message.contains(id), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_are_retrieved_listed_and_deleted_by_their_key_only() {
    let m = mock().await;
    let (relay, baseline) = start(&config(&m, "")).await;

    let v = created(&relay, &json!({"model": "demo-gpt", "input": "hello"})).await;
    let id = v["id"].as_str().unwrap();
    assert!(output_text(&v).contains("You said: hello"), "{v}");
    let got = retrieve(&relay, id).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(got.json(), v, "retrieve answers the Response object the create answered");

    let items = call(&relay, Method::GET, CLIENT_KEY, &format!("/v1/responses/{id}/input_items")).await;
    assert_eq!(items.status, StatusCode::OK, "{}", items.text());
    let items = items.json();
    assert_eq!((items["object"].as_str(), items["has_more"].as_bool()), (Some("list"), Some(false)), "{items}");
    let data = items["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{items}");
    assert_eq!((data[0]["type"].as_str(), data[0]["role"].as_str()), (Some("message"), Some("user")));
    assert_eq!(data[0]["content"], json!([{"type": "input_text", "text": "hello"}]));
    assert_eq!(items["first_id"], data[0]["id"]);

    // Another key sees nothing, whatever it asks.
    for (method, path) in [
        (Method::GET, format!("/v1/responses/{id}")),
        (Method::GET, format!("/v1/responses/{id}/input_items")),
        (Method::POST, format!("/v1/responses/{id}/cancel")),
        (Method::DELETE, format!("/v1/responses/{id}")),
    ] {
        assert_not_found(&call(&relay, method, OTHER_KEY, &path).await, id);
    }
    // A foreground response is not a job.
    let jobs = call(&relay, Method::GET, CLIENT_KEY, "/v1/jobs").await.json();
    assert_eq!(jobs["data"], json!([]), "{jobs}");

    // A streamed answer is stored as its terminal event's response.
    let evs = events(
        &relay,
        Method::POST,
        "/v1/responses",
        Some(&json!({"model": "demo-gpt", "input": "streamed", "stream": true})),
        None,
    )
    .await;
    let last = evs.last().expect("events");
    assert_eq!(last.name, "response.completed", "{evs:?}");
    let sid = last.data["response"]["id"].as_str().unwrap().to_string();
    let mut stored = Value::Null;
    wait_until("the streamed response is stored", Duration::from_secs(10), async || {
        let a = retrieve(&relay, &sid).await;
        stored = if a.status == StatusCode::OK { a.json() } else { Value::Null };
        a.status == StatusCode::OK
    })
    .await;
    assert_eq!(stored, last.data["response"]);

    // `store: false` keeps nothing.
    let unstored = created(&relay, &json!({"model": "demo-gpt", "input": "forget me", "store": false})).await;
    let uid = unstored["id"].as_str().unwrap();
    assert_not_found(&retrieve(&relay, uid).await, uid);

    let del = call(&relay, Method::DELETE, CLIENT_KEY, &format!("/v1/responses/{id}")).await;
    assert_eq!(del.status, StatusCode::OK, "{}", del.text());
    assert_eq!(del.json(), json!({"id": id, "object": "response", "deleted": true}));
    assert_not_found(&retrieve(&relay, id).await, id);
    assert_not_found(&call(&relay, Method::DELETE, CLIENT_KEY, &format!("/v1/responses/{id}")).await, id);

    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_response_id_sends_the_conversation_to_the_vendor() {
    let m = mock().await;
    let (relay, baseline) = start(&config(&m, "")).await;

    let first = created(&relay, &json!({"model": "demo-gpt", "input": "first", "instructions": "be brief"})).await;
    let first_id = first["id"].as_str().unwrap();
    let second =
        created(&relay, &json!({"model": "demo-gpt", "input": "second", "previous_response_id": first_id})).await;
    assert_eq!(second["previous_response_id"], first_id, "{second}");
    assert!(output_text(&second).contains("You said: second"), "{second}");

    // The openai channel passes Responses through: the vendor gets the chain as `input` items.
    let sent = m.stats.received().last().expect("the mock was called").body.clone();
    assert!(sent.get("previous_response_id").is_none(), "{sent}");
    assert!(sent.get("instructions").is_none(), "instructions are not carried over: {sent}");
    let turns: Vec<(String, String)> = sent["input"]
        .as_array()
        .expect("input items")
        .iter()
        .map(|m| (m["role"].as_str().unwrap_or("").to_string(), m["content"].to_string()))
        .collect();
    assert_eq!(turns.len(), 3, "{turns:?}");
    assert_eq!(turns[0].0, "user");
    assert!(turns[0].1.contains("first"), "{turns:?}");
    assert_eq!(turns[1].0, "assistant");
    assert!(turns[1].1.contains("You said: first"), "{turns:?}");
    assert_eq!(turns[2].0, "user");
    assert!(turns[2].1.contains("second"), "{turns:?}");

    // A chain of three: every earlier turn, oldest first.
    let third = json!({"model": "demo-gpt", "input": [{"role": "user", "content": "third"}], "previous_response_id": second["id"]});
    created(&relay, &third).await;
    let sent = m.stats.received().last().unwrap().body.clone();
    assert_eq!(sent["input"].as_array().map(Vec::len), Some(5), "{sent}");
    // The stored record keeps only the request's own input.
    let items =
        call(&relay, Method::GET, CLIENT_KEY, &format!("/v1/responses/{}/input_items", second["id"].as_str().unwrap()))
            .await
            .json();
    assert_eq!(items["data"].as_array().unwrap().len(), 1, "{items}");

    // Unknown, or another key's: 404 naming the field, and the vendor is not called.
    let calls = m.stats.received().len();
    for (key, prev) in [(CLIENT_KEY, "resp_unknown"), (OTHER_KEY, first_id)] {
        let body = json!({"model": "demo-gpt", "input": "x", "previous_response_id": prev});
        let a = relay.request(Method::POST, "/v1/responses", Some(key), &body.to_string()).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.text());
        let (message, _) = a.openai_error();
        assert_eq!(a.json()["error"]["param"], "previous_response_id", "{}", a.text());
        assert!(message.contains(prev), "{message}");
    }
    let a = create(&relay, &json!({"model": "demo-gpt", "input": "x", "background": true, "store": false})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
    assert_eq!(m.stats.received().len(), calls);

    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_responses_are_polled_to_their_end_and_cancel_is_idempotent() {
    let m = mock().await;
    let (relay, baseline) = start(&config(&m, "")).await;

    let v = created(&relay, &json!({"model": "slow-gpt", "input": "in the background", "background": true})).await;
    assert_eq!((v["status"].as_str(), v["background"].as_bool()), (Some("queued"), Some(true)), "{v}");
    let id = v["id"].as_str().unwrap();
    let (seen, done) = poll(&relay, id, |v| v["status"] != "queued" && v["status"] != "in_progress").await;
    assert_eq!(seen.last().map(String::as_str), Some("completed"), "{seen:?} {done}");
    assert!(seen.iter().any(|s| s == "in_progress"), "a 2 s stream is seen running: {seen:?}");
    assert!(seen.iter().all(|s| ["queued", "in_progress", "completed"].contains(&s.as_str())), "{seen:?}");
    assert!(output_text(&done).contains("You said: in the background"), "{done}");
    assert_eq!((done["id"].as_str(), done["background"].as_bool()), (Some(id), Some(true)));

    // Cancelling a finished one answers it as it is, every time.
    let path = format!("/v1/responses/{id}/cancel");
    let c1 = call(&relay, Method::POST, CLIENT_KEY, &path).await;
    let c2 = call(&relay, Method::POST, CLIENT_KEY, &path).await;
    assert_eq!(c1.status, StatusCode::OK, "{}", c1.text());
    assert_eq!((c1.json(), c2.json()), (done.clone(), done.clone()));

    // A running one stops; a second cancel answers the same.
    let v = created(&relay, &json!({"model": "very-slow-gpt", "input": "long", "background": true})).await;
    let id = v["id"].as_str().unwrap();
    poll(&relay, id, |v| v["status"] == "in_progress").await;
    let path = format!("/v1/responses/{id}/cancel");
    let c1 = call(&relay, Method::POST, CLIENT_KEY, &path).await;
    assert_eq!(c1.status, StatusCode::OK, "{}", c1.text());
    let c1 = c1.json();
    assert_eq!(c1["status"], "cancelled", "{c1}");
    assert_eq!(call(&relay, Method::POST, CLIENT_KEY, &path).await.json(), c1);
    assert_eq!(retrieve(&relay, id).await.json(), c1);

    // A foreground response cannot be cancelled.
    let fg = created(&relay, &json!({"model": "demo-gpt", "input": "now"})).await;
    let a =
        call(&relay, Method::POST, CLIENT_KEY, &format!("/v1/responses/{}/cancel", fg["id"].as_str().unwrap())).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());

    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
    let metrics = relay.metrics().await;
    assert_eq!(metrics.value("relay_jobs", &[("status", "running")]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_stream_cut_and_resumed_gets_exactly_the_missing_events() {
    let m = mock().await;
    let (relay, baseline) = start(&config(&m, "")).await;

    let body = json!({"model": "slow-gpt", "input": "resume me", "background": true, "stream": true});
    let head = events(&relay, Method::POST, "/v1/responses", Some(&body), Some(5)).await;
    assert_eq!(head.len(), 5, "{head:?}");
    assert_eq!(head[0].name, "response.created");
    let id = head[0].data["response"]["id"].as_str().unwrap().to_string();
    let after = head.last().unwrap().seq();
    // The client went away; the job goes on, and the rest is there to resume.
    let tail =
        events(&relay, Method::GET, &format!("/v1/responses/{id}?stream=true&starting_after={after}"), None, None)
            .await;
    let all: Vec<Ev> = head.iter().chain(tail.iter()).cloned().collect();
    let seqs: Vec<u64> = all.iter().map(Ev::seq).collect();
    assert_eq!(seqs, (0..all.len() as u64).collect::<Vec<_>>(), "every event once, in order");
    for e in &all {
        assert_eq!(e.data["type"].as_str(), Some(e.name.as_str()), "{e:?}");
    }
    let last = all.last().unwrap();
    assert_eq!(last.name, "response.completed", "{all:?}");
    assert!(output_text(&last.data["response"]).contains("You said: resume me"));
    // A replay from the start is the same stream.
    let replay = events(&relay, Method::GET, &format!("/v1/responses/{id}?stream=true"), None, None).await;
    assert_eq!(replay, all);
    // Resumed after its last event, the stream has nothing more.
    let none = events(
        &relay,
        Method::GET,
        &format!("/v1/responses/{id}?stream=true&starting_after={}", last.seq()),
        None,
        None,
    )
    .await;
    assert!(none.is_empty(), "{none:?}");

    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_finished_background_responses_and_fails_running_ones() {
    let m = mock().await;
    let cfg = config(&m, "");
    let (relay, _) = start(&cfg).await;
    let done = created(&relay, &json!({"model": "demo-gpt", "input": "keep me", "background": true})).await;
    let done_id = done["id"].as_str().unwrap();
    let (_, done) = poll(&relay, done_id, |v| v["status"] == "completed").await;
    let running = created(&relay, &json!({"model": "very-slow-gpt", "input": "cut me", "background": true})).await;
    let running_id = running["id"].as_str().unwrap();
    poll(&relay, running_id, |v| v["status"] == "in_progress").await;

    let dir = relay.stop();
    let relay = TestRelay::start_in(dir, Setup { config: &cfg, adapters: &["openai"], env: &[] }).await.unwrap();
    assert_eq!(retrieve(&relay, done_id).await.json(), done);
    let failed = retrieve(&relay, running_id).await.json();
    assert_eq!(
        (failed["status"].as_str(), failed["error"]["code"].as_str()),
        (Some("failed"), Some("job_interrupted")),
        "{failed}"
    );
    // Its event stream ends with the failure, after what was stored before the restart.
    let evs = events(&relay, Method::GET, &format!("/v1/responses/{running_id}?stream=true"), None, None).await;
    let last = evs.last().expect("events");
    assert_eq!(last.name, "response.failed", "{evs:?}");
    assert_eq!(last.seq(), evs.len() as u64 - 1);
    assert_eq!(last.data["response"]["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_responses_keep_to_the_store_bounds() {
    let m = mock().await;
    // Room for a couple of small records, not more.
    let (relay, baseline) = start(&config(&m, "[jobs]\nmax_store_bytes = 4000\n")).await;
    let mut stored = Vec::new();
    for i in 0..4 {
        let v = created(&relay, &json!({"model": "demo-gpt", "input": format!("number {i}")})).await;
        stored.push(v["id"].as_str().unwrap().to_string());
    }
    let metrics = relay
        .expect_metrics("a response refused by the store bound", Duration::from_secs(10), |m| {
            m.value("relay_job_refusals_total", &[("reason", "store_full")]) >= 1.0
        })
        .await;
    assert!(metrics.gauge("relay_job_store_bytes") <= 4000.0);
    let mut found = 0;
    for id in &stored {
        let a = retrieve(&relay, id).await;
        found += usize::from(a.status == StatusCode::OK);
    }
    assert!((1..4).contains(&found), "some stored, not all: {found}");
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
    drop(relay);

    // Retention purges stored responses as it purges jobs.
    let (relay, _) = start(&config(&m, "[jobs]\nretention = 0.5\nsweep_interval = 0.1\n")).await;
    let v = created(&relay, &json!({"model": "demo-gpt", "input": "short-lived"})).await;
    let id = v["id"].as_str().unwrap().to_string();
    wait_until("the response is purged", Duration::from_secs(10), async || {
        retrieve(&relay, &id).await.status == StatusCode::NOT_FOUND
    })
    .await;
}
