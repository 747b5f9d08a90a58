//! Failover under real vendor faults (issue 14's table), through the real binary: each
//! vendor is its own mock that injects exactly one fault, once (`x-mock-fail-first`) or
//! for good, so its count of requests is the attempts it saw. Each row asserts the answer,
//! those attempts (never more than `[retry]` allows), the timing against its bounds
//! (generous slack, lower bounds where a wait is promised), the metrics and the access
//! record; each test ends with the gauges back at their baseline.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use relay_tests::*;

async fn mock() -> Mock {
    Mock::start(Options::default()).await.unwrap()
}

fn seen(m: &Mock) -> u64 {
    m.stats.requests.load(Ordering::SeqCst)
}

/// A `headers = {...}` line of mock knobs.
fn knobs(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("\"{k}\" = \"{v}\"")).collect();
    format!("headers = {{ {} }}\n", inner.join(", "))
}

async fn chat_as(relay: &TestRelay, id: &str, model: &str, stream: bool) -> Answer {
    let body = chat_body(model, "hello there", stream).to_string();
    relay.request_with(Method::POST, "/v1/chat/completions", Some(CLIENT_KEY), &[("x-request-id", id)], &body).await
}

/// Assert the access line: who answered, after how many attempts, with what status, and
/// the attempts that were not the answer (`tried`).
async fn assert_access(relay: &TestRelay, id: &str, channel: &str, attempts: u32, status: u16, tried: &str) {
    let line = relay.access_line(&format!("request_id={id} ")).await;
    for want in [
        format!(" channel=\"{channel}\""),
        format!(" attempts={attempts} "),
        format!(" status={status} "),
        format!(" tried=\"{tried}\""),
    ] {
        assert!(line.contains(&want), "{id}: expected `{}` in the access line: {line}", want.trim());
    }
}

async fn settle(relay: &TestRelay, baseline: Gauges, fds: usize) {
    relay.assert_back_to(baseline, Duration::from_secs(10)).await;
    relay.assert_fds_back(fds, Duration::from_secs(10)).await;
}

async fn relay_on(config: &str, warm: &Mock) -> (TestRelay, Gauges, usize) {
    let config = format!("{}{config}", channel("warm", &warm.base_url(), "warm", ""));
    let (relay, baseline) = relay_with_baseline(&config, &["warm"]).await;
    let fds = relay.open_fds();
    (relay, baseline, fds)
}

fn counter(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    m.value(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_before_the_head_is_retried_or_fails_over() {
    let good = mock().await;
    let (once, always, dead) = (mock().await, mock().await, mock().await);
    let reset_once = knobs(&[("x-mock-fault", "reset"), ("x-mock-fail-first", "1")]);
    let reset = knobs(&[("x-mock-fault", "reset")]);
    let retry = "[channel.retry]\nattempts = 3\nbackoff = 0.05\n";
    let config = [
        // Reset once, then answers: the same channel's second try is the answer.
        channel("once", &once.base_url(), "once", &format!("{reset_once}{retry}")),
        // Resets every time: three tries (its `attempts`), then the reset is the answer.
        channel("always", &always.base_url(), "always", &format!("{reset}{retry}")),
        // Resets, with another channel: one try (the default), then the next channel.
        channel("dead", &dead.base_url(), "over", &format!("priority = 1\n{reset}")),
        channel("backup", &good.base_url(), "over", ""),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    let a = chat_as(&relay, "reset-once", "once", false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(seen(&once), 2, "one reset, one answer");
    assert_access(&relay, "reset-once", "once", 2, 200, "once:dropped").await;

    let t = Instant::now();
    let a = chat_as(&relay, "reset-always", "always", false).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{}", a.text());
    assert!(a.openai_error().0.contains("channel always failed before answering"), "{}", a.text());
    assert_eq!(seen(&always), 3, "no more tries than [retry] attempts");
    // Two backoffs of at most 0.05 and 0.1 s: far under 5 s even on a loaded machine.
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_access(&relay, "reset-always", "always", 3, 502, "always:dropped,always:dropped").await;

    let before = seen(&good);
    let a = chat_as(&relay, "reset-over", "over", false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!((seen(&dead), seen(&good) - before), (1, 1));
    assert_access(&relay, "reset-over", "backup", 2, 200, "dead:dropped").await;

    let m = relay.metrics().await;
    assert_eq!(counter(&m, "relay_retries_total", &[("channel", "once"), ("reason", "dropped")]), 1.0);
    assert_eq!(counter(&m, "relay_retries_total", &[("channel", "always"), ("reason", "dropped")]), 2.0);
    let over = [("from", "dead"), ("to", "backup"), ("reason", "dropped")];
    assert_eq!(counter(&m, "relay_failovers_total", &over), 1.0);
    // Zero samples from start for a pair that never failed over.
    assert!(m.0.contains("relay_failovers_total{from=\"dead\",to=\"backup\",reason=\"status_5xx\"} 0"), "{}", m.0);
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_vendor_fails_over_within_the_total() {
    let good = mock().await;
    let silent = mock().await;
    let quiet = knobs(&[("x-mock-header-delay-ms", "30000")]);
    let config = [
        channel(
            "silent",
            &silent.base_url(),
            "s",
            &format!("priority = 1\n{quiet}[channel.timeouts]\nresponse_header = 0.5\ntotal = 20\n"),
        ),
        channel("backup", &good.base_url(), "s", "[channel.timeouts]\ntotal = 20\n"),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    for stream in [false, true] {
        let id = format!("silent-{stream}");
        let before = (seen(&silent), seen(&good));
        let t = Instant::now();
        let a = chat_as(&relay, &id, "s", stream).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        if stream {
            assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", a.text());
        }
        // At least the silent channel's header bound, and far inside the total of 20 s.
        assert!(t.elapsed() >= Duration::from_millis(450), "{:?}", t.elapsed());
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!((seen(&silent) - before.0, seen(&good) - before.1), (1, 1));
        assert_access(&relay, &id, "backup", 2, 200, "silent:timeout").await;
    }
    let m = relay.metrics().await;
    assert_eq!(counter(&m, "relay_failovers_total", &[("from", "silent"), ("reason", "timeout")]), 2.0);
    assert_eq!(m.value("relay_timeouts_total", &[("stage", "response_header")]), 2.0);
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_and_a_one_off_500_are_retried_on_the_same_channel_within_the_budget() {
    let good = mock().await;
    let (limited, broken, down, patient) = (mock().await, mock().await, mock().await, mock().await);
    let limited_once = knobs(&[("x-mock-status", "429"), ("x-mock-retry-after", "1"), ("x-mock-fail-first", "1")]);
    let broken_once = knobs(&[("x-mock-status", "500"), ("x-mock-fail-first", "1")]);
    let retry = "[channel.retry]\nattempts = 3\nbackoff = 0.05\nbackoff_max = 0.2\n";
    let config = [
        channel("limited", &limited.base_url(), "limited", &format!("{limited_once}{retry}")),
        channel("broken", &broken.base_url(), "broken", &format!("{broken_once}{retry}")),
        channel("down", &down.base_url(), "down", &format!("{}{retry}", knobs(&[("x-mock-status", "500")]))),
        // Retry-After beyond the request's retry budget: no wait, the vendor's 429 is the answer.
        channel(
            "patient",
            &patient.base_url(),
            "patient",
            &format!(
                "{}[channel.retry]\nattempts = 3\nbudget = 1\n",
                knobs(&[("x-mock-status", "429"), ("x-mock-retry-after", "5")])
            ),
        ),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    // Retry-After: 1 honoured: the second try waits at least that long, and answers.
    let t = Instant::now();
    let a = chat_as(&relay, "ra-once", "limited", false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert!(t.elapsed() >= Duration::from_millis(950), "the retry came before Retry-After: {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    assert_eq!(seen(&limited), 2);
    assert_access(&relay, "ra-once", "limited", 2, 200, "limited:status_429").await;

    let a = chat_as(&relay, "500-once", "broken", false).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(seen(&broken), 2);
    assert_access(&relay, "500-once", "broken", 2, 200, "broken:status_5xx").await;

    let a = chat_as(&relay, "500-always", "down", false).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.text());
    assert_eq!(a.openai_error().0, "Mock vendor error 500");
    assert_eq!(seen(&down), 3, "no more tries than [retry] attempts");
    assert_access(&relay, "500-always", "down", 3, 500, "down:status_5xx,down:status_5xx").await;

    let t = Instant::now();
    let a = chat_as(&relay, "over-budget", "patient", false).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
    assert_eq!(a.headers["retry-after"], "5");
    assert!(t.elapsed() < Duration::from_secs(4), "waited past the budget: {:?}", t.elapsed());
    assert_eq!(seen(&patient), 1);

    let m = relay.metrics().await;
    assert_eq!(counter(&m, "relay_retries_total", &[("channel", "limited"), ("reason", "status_429")]), 1.0);
    assert_eq!(counter(&m, "relay_retries_total", &[("channel", "broken"), ("reason", "status_5xx")]), 1.0);
    assert_eq!(counter(&m, "relay_retries_total", &[("channel", "down"), ("reason", "status_5xx")]), 2.0);
    assert_eq!(counter(&m, "relay_retries_total", &[("channel", "patient")]), 0.0);
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooling_channel_is_skipped_and_never_hammered() {
    let good = mock().await;
    let (alone, primary, capped) = (mock().await, mock().await, mock().await);
    let limited = |after: &str| knobs(&[("x-mock-status", "429"), ("x-mock-retry-after", after)]);
    let config = [
        channel("alone", &alone.base_url(), "alone", &limited("30")),
        channel("primary", &primary.base_url(), "pair", &format!("priority = 1\n{}", limited("30"))),
        channel("backup", &good.base_url(), "pair", ""),
        // Asks for an hour; `max_cooldown` honours a second of it.
        channel(
            "capped",
            &capped.base_url(),
            "capped",
            &format!("{}[channel.retry]\nmax_cooldown = 1\n", limited("3600")),
        ),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    // The vendor's own 429 first; then the relay answers for it while it cools down.
    let a = chat_as(&relay, "cool-1", "alone", false).await;
    assert_eq!((a.status, a.openai_error().0.as_str()), (StatusCode::TOO_MANY_REQUESTS, "Mock vendor error 429"));
    for i in 0..3 {
        let id = format!("cool-again-{i}");
        let a = chat_as(&relay, &id, "alone", false).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.text());
        let (msg, code) = a.openai_error();
        assert_eq!(code, "upstream_rate_limited", "{msg}");
        let after: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&after), "{after}");
        assert_access(&relay, &id, "-", 0, 429, "alone:cooling").await;
    }
    assert_eq!(seen(&alone), 1, "a cooling vendor is not called");

    // With somewhere else to go: the first request fails over, the next skip the primary.
    let before = seen(&good);
    for i in 0..3 {
        let id = format!("pair-{i}");
        let a = chat_as(&relay, &id, "pair", false).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        let (attempts, tried) = if i == 0 { (2, "primary:status_429") } else { (1, "primary:cooling") };
        assert_access(&relay, &id, "backup", attempts, 200, tried).await;
    }
    assert_eq!((seen(&primary), seen(&good) - before), (1, 3));

    // The longest cooldown honoured is the channel's `max_cooldown`: the vendor is asked
    // again after about a second, not an hour.
    let t = Instant::now();
    let a = chat_as(&relay, "capped-1", "capped", false).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let end = Instant::now() + Duration::from_secs(10);
    let mut refused = 0;
    while seen(&capped) < 2 {
        assert!(Instant::now() < end, "the capped channel was not tried again within 10 s");
        let a = chat_as(&relay, "capped-n", "capped", false).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        if seen(&capped) < 2 {
            assert_eq!(a.headers["retry-after"], "1");
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(t.elapsed() >= Duration::from_millis(950), "cooled down less than max_cooldown: {:?}", t.elapsed());
    assert!(refused >= 1);

    let m = relay.metrics().await;
    assert_eq!(m.gauge("relay_cooling_refused_total"), f64::from(3 + refused));
    let over = [("from", "primary"), ("to", "backup"), ("reason", "status_429")];
    assert_eq!(counter(&m, "relay_failovers_total", &over), 1.0);
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_context_length_400_fails_over_and_a_content_filter_400_does_not() {
    let good = mock().await;
    let (small, filtered, other) = (mock().await, mock().await, mock().await);
    let error = |code: &str| knobs(&[("x-mock-status", "400"), ("x-mock-error-code", code)]);
    let config = [
        channel("small", &small.base_url(), "long", &format!("priority = 1\n{}", error("context_length_exceeded"))),
        channel("large", &good.base_url(), "long", ""),
        channel("filtered", &filtered.base_url(), "filter", &format!("priority = 1\n{}", error("content_filter"))),
        channel("other", &other.base_url(), "filter", ""),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    for stream in [false, true] {
        let id = format!("ctx-{stream}");
        let a = chat_as(&relay, &id, "long", stream).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text());
        assert_access(&relay, &id, "large", 2, 200, "small:context_length").await;

        let id = format!("filter-{stream}");
        let a = chat_as(&relay, &id, "filter", stream).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text());
        assert_eq!(a.openai_error().1, "content_filter");
        assert_access(&relay, &id, "filtered", 1, 400, "").await;
    }
    assert_eq!((seen(&small), seen(&filtered), seen(&other)), (2, 2, 0));
    let m = relay.metrics().await;
    let over = [("from", "small"), ("to", "large"), ("reason", "context_length")];
    assert_eq!(counter(&m, "relay_failovers_total", &over), 2.0);
    assert_eq!(counter(&m, "relay_failovers_total", &[("from", "filtered")]), 0.0);
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_primary_is_rescued_and_only_the_answer_is_accounted() {
    let good = mock().await;
    let flappy = mock().await;
    let flap = knobs(&[("x-mock-status", "503"), ("x-mock-fail-every", "2")]);
    let config = [
        channel("flappy", &flappy.base_url(), "f", &format!("priority = 1\n{flap}")),
        channel("steady", &good.base_url(), "f", ""),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    const N: u64 = 10;
    let before = seen(&good);
    for i in 0..N {
        let a = chat_as(&relay, &format!("flap-{i}"), "f", i % 3 == 0).await;
        assert_eq!(a.status, StatusCode::OK, "#{i}: {}", a.text());
        // Every odd-numbered request (the 1st, 3rd, ...) met the 503 and moved on.
        if i % 2 == 0 {
            assert_access(&relay, &format!("flap-{i}"), "steady", 2, 200, "flappy:status_5xx").await;
        } else {
            assert_access(&relay, &format!("flap-{i}"), "flappy", 1, 200, "").await;
        }
    }
    assert_eq!((seen(&flappy), seen(&good) - before), (N, N / 2));
    // Status and usage are those of the answer: the absorbed 503s are attempts only.
    let m = relay.metrics().await;
    assert_eq!(m.value("relay_requests_total", &[("channel", "flappy"), ("status", "503")]), 0.0);
    assert_eq!(m.value("relay_requests_total", &[("model", "f")]), N as f64);
    assert_eq!(m.value("relay_requests_total", &[("channel", "steady"), ("status", "200")]), (N / 2) as f64);
    assert!(m.value("relay_tokens_total", &[("channel", "steady"), ("kind", "completion")]) > 0.0);
    assert_eq!(m.value("relay_upstream_attempts_total", &[("channel", "flappy"), ("outcome", "status_5xx")]), 5.0);
    assert_eq!(counter(&m, "relay_failovers_total", &[("from", "flappy"), ("reason", "status_5xx")]), 5.0);
    assert_eq!(m.value("relay_errors_total", &[("kind", "upstream_status")]), 0.0);
    settle(&relay, baseline, fds).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_or_failed_first_token_fails_over_before_any_byte_reached_the_client() {
    let good = mock().await;
    let (stalled, dropped, lone) = (mock().await, mock().await, mock().await);
    let stall = knobs(&[("x-mock-fault", "stall-after:0")]);
    let first_token = "[channel.timeouts]\nfirst_token = 0.5\n";
    let config = [
        // The head, then silence: no first event within `first_token`.
        channel("stalled", &stalled.base_url(), "st", &format!("priority = 1\n{stall}{first_token}")),
        channel("backup", &good.base_url(), "st", ""),
        // The head, then the connection drops before the first event.
        channel(
            "dropped",
            &dropped.base_url(),
            "dr",
            &format!("priority = 1\n{}", knobs(&[("x-mock-fault", "drop-after:0")])),
        ),
        channel("backup-dr", &good.base_url(), "dr", ""),
        // Nowhere to go: the bound still holds, and the client gets a clean 504.
        channel("lone", &lone.base_url(), "lone", &format!("{stall}{first_token}")),
    ]
    .concat();
    let (relay, baseline, fds) = relay_on(&config, &good).await;

    let t = Instant::now();
    let a = chat_as(&relay, "ft-stalled", "st", true).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    let events = a.sse_data();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    assert!(!joined_content(&events).is_empty(), "{events:?}");
    assert!(t.elapsed() >= Duration::from_millis(450) && t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_access(&relay, "ft-stalled", "backup", 2, 200, "stalled:first_token").await;

    let a = chat_as(&relay, "ft-dropped", "dr", true).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text());
    assert_eq!(a.sse_data().last().map(String::as_str), Some("[DONE]"), "{}", a.text());
    assert_access(&relay, "ft-dropped", "backup-dr", 2, 200, "dropped:stream_start").await;

    let t = Instant::now();
    let a = chat_as(&relay, "ft-lone", "lone", true).await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT, "{}", a.text());
    let (msg, code) = a.openai_error();
    assert_eq!(code, "upstream_timeout");
    assert!(msg.contains("first token timeout after 0.5 s on channel lone"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert_access(&relay, "ft-lone", "lone", 1, 504, "").await;

    assert_eq!((seen(&stalled), seen(&dropped), seen(&lone)), (1, 1, 1));
    let m = relay.metrics().await;
    assert_eq!(m.value("relay_timeouts_total", &[("stage", "first_token")]), 2.0);
    assert_eq!(counter(&m, "relay_failovers_total", &[("from", "stalled"), ("reason", "first_token")]), 1.0);
    assert_eq!(counter(&m, "relay_failovers_total", &[("from", "dropped"), ("reason", "stream_start")]), 1.0);
    // The abandoned streams' vendor connections are closed, their stream gauges released.
    settle(&relay, baseline, fds).await;
}
