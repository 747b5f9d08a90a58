//! Unit tests for parsing, validation and resolution of `relay.toml`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::resolve::{readable_secrets, validate_base_url};
use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const GOOD: &str = r#"
listen = "127.0.0.1:3999"
plugin_dir = "adapters"
[timeouts]
total = 600
stream_idle = 0.5
[[channel]]
name = "main"
adapter = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "OPENAI_KEY"
models = ["gpt-4o"]
priority = 2
settings = { flag = true, n = 3 }
headers = { "x-team" = "a" }
[channel.timeouts]
total = 30
[[token]]
name = "team-a"
key = "sk-a"
models = ["*"]
"#;

#[test]
fn parses_and_resolves() {
    let c = Config::parse(GOOD, Path::new("/etc/relay"), &env(&[("OPENAI_KEY", "sk-up")])).unwrap();
    assert_eq!(c.startup.listen.port(), 3999);
    assert_eq!(c.startup.plugin_dir, Path::new("/etc/relay/adapters"));
    assert_eq!(c.live.timeouts.total, Duration::from_secs(600));
    assert_eq!(c.live.timeouts.stream_idle, Duration::from_millis(500));
    assert_eq!(c.live.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
    let ch = &c.live.channels[0];
    assert_eq!(ch.base_url, "https://api.openai.com/v1");
    assert_eq!(ch.api_key.as_deref(), Some("sk-up"));
    assert_eq!(ch.timeouts.total, Duration::from_secs(30));
    assert_eq!(ch.timeouts.stream_idle, Duration::from_millis(500));
    assert_eq!(ch.settings, vec![("flag".into(), "true".into()), ("n".into(), "3".into())]);
    assert!(c.live.tokens[0].allows("anything"));
    assert!(!format!("{ch:?}").contains("sk-up"));
}

#[test]
fn env_overrides_the_file() {
    let e = env(&[("OPENAI_KEY", "k"), ("RELAY_TIMEOUT", "1200"), ("RELAY_CONNECT_TIMEOUT", "2.5")]);
    let c = Config::parse(GOOD, Path::new("."), &e).unwrap();
    assert_eq!(c.live.timeouts.total, Duration::from_secs(1200));
    assert_eq!(c.live.timeouts.connect, Duration::from_millis(2500));
    let bad = env(&[("OPENAI_KEY", "k"), ("RELAY_TIMEOUT", "soon")]);
    let err = Config::parse(GOOD, Path::new("."), &bad).unwrap_err().to_string();
    assert!(err.contains("RELAY_TIMEOUT"), "{err}");
}

#[test]
fn errors_name_key_and_line() {
    let err = |text: &str| format!("{:#}", Config::parse(text, Path::new("."), &env(&[])).unwrap_err());
    let e = err("[timeouts]\ntotal = -1\n");
    assert!(e.contains("timeouts.total") && e.contains("line 2"), "{e}");
    let e = err("listen = \"nope\"\n");
    assert!(e.contains("listen") && e.contains("line 1"), "{e}");
    let e = err("[[channel]]\nname = \"a\"\nadapter = \"openai\"\nbase_url = \"ftp://x\"\nmodels = [\"m\"]\n");
    assert!(e.contains("base_url") && e.contains("line 4"), "{e}");
    let e = err(
        "[[channel]]\nname = \"a\"\nadapter = \"o\"\nbase_url = \"http://x\"\napi_key_env = \"NOPE\"\nmodels = [\"m\"]\n",
    );
    assert!(e.contains("NOPE") && e.contains("line 5"), "{e}");
    let e = err("bogus = 1\n");
    assert!(e.contains("bogus") && e.contains("line 1"), "{e}");
    let e = err("[[token]]\nname = \"t\"\nmodels = [\"*\"]\n");
    assert!(e.contains("token[0] 't'") && e.contains("key"), "{e}");
    let e = err("[[token]]\nname = \"t\"\nkey_env = \"NOPE_KEY\"\nmodels = [\"*\"]\n");
    assert!(e.contains("key_env") && e.contains("NOPE_KEY") && e.contains("line 3"), "{e}");
    let e = err("[limits]\nmax_request_body = 0\n");
    assert!(e.contains("limits.max_request_body") && e.contains("line 2"), "{e}");
    let e = err("[limits]\nplugin_call_timeout_ms = 200\nplugin_wall_timeout_ms = 100\n");
    assert!(e.contains("limits.plugin_wall_timeout_ms") && e.contains("line 3"), "{e}"); // Token keys name their line too, inline or from the environment.
    let e = err("listen = \"127.0.0.1:0\"\nadmin_token = \"short\"\n");
    assert!(e.contains("admin_token (line 2): must be at least 16"), "{e}");
    let e = err("\nadmin_token = \"0123456789abcdef\"\nadmin_token_env = \"X\"\n");
    assert!(e.contains("admin_token (line 2)") && e.contains("not both"), "{e}");
    let short = env(&[("ADMIN", "short")]);
    let e = format!("{:#}", Config::parse("\n\nadmin_token_env = \"ADMIN\"\n", Path::new("."), &short).unwrap_err());
    assert!(e.contains("admin_token (line 3): must be at least 16"), "{e}");
}

#[test]
fn client_body_is_refused_per_channel() {
    let text = "[[channel]]\nname = \"a\"\nadapter = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"m\"]\n\
                [channel.timeouts]\ntotal = 5\nclient_body = 5\n";
    let e = format!("{:#}", Config::parse(text, Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("channel[0] 'a'") && e.contains("timeouts.client_body (line 8)"), "{e}");
    assert!(e.contains("set it in [timeouts]"), "{e}");
    // The same key at the top level is fine.
    assert!(Config::parse("[timeouts]\nclient_body = 5\n", Path::new("."), &env(&[])).is_ok());
}

#[test]
fn plugin_wall_timeout_follows_the_call_timeout_unless_set() {
    let l = |text: &str| Config::parse(text, Path::new("."), &env(&[])).unwrap().startup.adapters.wall_timeout;
    assert_eq!(l(""), Duration::from_secs(2));
    assert_eq!(l("[limits]\nplugin_call_timeout_ms = 200\n"), Duration::from_secs(4));
    assert_eq!(l("[limits]\nplugin_wall_timeout_ms = 500\n"), Duration::from_millis(500));
}

#[test]
fn jobs_table() {
    let c = Config::parse("", Path::new("/etc/relay"), &env(&[])).unwrap();
    assert_eq!(c.startup.jobs.path, Path::new("/etc/relay/.relay/jobs"));
    assert_eq!(c.startup.jobs.retention, DEFAULT_JOB_RETENTION);
    assert_eq!(c.startup.jobs.max_running, DEFAULT_JOBS_MAX_RUNNING);
    let c = Config::parse(
        "[jobs]\npath = \"j\"\nretention = 0.5\nmax_running = 2\nmax_queued = 3\nmax_bytes_per_job = 10\n",
        Path::new("/r"),
        &env(&[]),
    )
    .unwrap();
    assert_eq!(c.startup.jobs.path, Path::new("/r/j"));
    assert_eq!(c.startup.jobs.retention, Duration::from_millis(500));
    assert_eq!((c.startup.jobs.max_running, c.startup.jobs.max_queued, c.startup.jobs.max_bytes_per_job), (2, 3, 10));
    let e = format!("{:#}", Config::parse("[jobs]\nsweep_interval = 1e-12\n", Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("jobs.sweep_interval") && e.contains("from 0.001"), "{e}");
    let e = format!("{:#}", Config::parse("[timeouts]\ntotal = 1e-9\n", Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("timeouts.total") && e.contains("minimum of 0.001"), "{e}");
    let e = format!("{:#}", Config::parse("[jobs]\nmax_queued = 0\n", Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("jobs.max_queued") && e.contains("line 2"), "{e}");
    assert_eq!(
        (c.startup.jobs.max_per_owner, c.startup.jobs.max_store_bytes),
        (DEFAULT_JOBS_MAX_PER_OWNER, DEFAULT_JOB_MAX_STORE_BYTES)
    );
    let c = Config::parse("[jobs]\nmax_per_owner = 5\nmax_store_bytes = 4096\n", Path::new("."), &env(&[])).unwrap();
    assert_eq!((c.startup.jobs.max_per_owner, c.startup.jobs.max_store_bytes), (5, 4096));
    let e = format!("{:#}", Config::parse("[jobs]\nmax_per_owner = 0\n", Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("jobs.max_per_owner"), "{e}");
}

#[test]
fn dns_stage_and_servers() {
    let c =
        Config::parse("dns_servers = [\"127.0.0.1:5353\", \"::1\"]\n[timeouts]\ndns = 2\n", Path::new("."), &env(&[]))
            .unwrap();
    assert_eq!(c.startup.dns_servers, vec!["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
    assert_eq!(c.live.timeouts.dns, Duration::from_secs(2));
    assert_eq!(Config::parse("", Path::new("."), &env(&[])).unwrap().live.timeouts.dns, DEFAULT_DNS_TIMEOUT);
    let e = format!("{:#}", Config::parse("dns_servers = [\"resolver\"]\n", Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("dns_servers (line 1)"), "{e}");
}

#[test]
fn inline_secrets_in_a_readable_file_are_flagged() {
    let inline = "admin_token = \"0123456789abcdef\"\n";
    assert!(readable_secrets(inline, 0o644));
    assert!(!readable_secrets(inline, 0o600));
    assert!(readable_secrets("[[token]]\nname = \"a\"\nkey = \"k\"\nmodels = [\"*\"]\n", 0o640));
    assert!(!readable_secrets("[[token]]\nname = \"a\"\nkey_env = \"K\"\nmodels = [\"*\"]\n", 0o644));
}

#[test]
fn client_edge_limits() {
    let c = Config::parse("", Path::new("."), &env(&[])).unwrap();
    assert_eq!(c.live.limits.client_header_timeout, DEFAULT_CLIENT_HEADER_TIMEOUT);
    assert_eq!(c.live.limits.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(c.live.limits.max_inflight_body_bytes, DEFAULT_MAX_INFLIGHT_BODY_BYTES);
    assert!(c.live.metrics_token.is_none());
    let c = Config::parse(
        "metrics_token_env = \"M\"\n[limits]\nclient_header_timeout = 1.5\nclient_idle_timeout = 2\nclient_write_timeout = 3\n\
         lingering_close = 0.5\nmax_connections = 7\nhttp2_max_concurrent_streams = 8\nhttp2_keep_alive_interval = 9\n\
         max_request_body = 10\nmax_inflight_body_bytes = 10\n",
        Path::new("."),
        &env(&[("M", "0123456789abcdef")]),
    )
    .unwrap();
    let l = &c.live.limits;
    assert_eq!(l.client_header_timeout, Duration::from_millis(1500));
    assert_eq!((l.client_idle_timeout.as_secs(), l.client_write_timeout.as_secs()), (2, 3));
    assert_eq!(l.lingering_close, Duration::from_millis(500));
    assert_eq!((l.max_connections, l.http2_max_concurrent_streams), (7, 8));
    assert_eq!(l.http2_keep_alive_interval.as_secs(), 9);
    assert_eq!(c.live.metrics_token.unwrap().expose(), "0123456789abcdef");
    let e = |t: &str| format!("{:#}", Config::parse(t, Path::new("."), &env(&[])).unwrap_err());
    let m = e("[limits]\nmax_connections = 0\n");
    assert!(m.contains("limits.max_connections") && m.contains("line 2"), "{m}");
    let m = e("[limits]\n\nclient_write_timeout = -1\n");
    assert!(m.contains("limits.client_write_timeout") && m.contains("line 3"), "{m}");
    let m = e("[limits]\nmax_inflight_body_bytes = 1000\n");
    assert!(m.contains("limits.max_inflight_body_bytes"), "{m}");
    let m = e("metrics_token = \"short\"\n");
    assert!(m.contains("metrics_token (line 1): must be at least 16"), "{m}");
}

#[test]
fn base_url_rules() {
    assert_eq!(validate_base_url("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
    assert!(validate_base_url("http://h/v1?x=1").is_err());
    assert!(validate_base_url("https://user:pw@h").is_err());
    assert!(validate_base_url("h/v1").is_err());
}

#[test]
fn watch_defaults_on_and_is_validated() {
    let c = |text: &str| Config::parse(text, Path::new("."), &env(&[]));
    assert!(c("").unwrap().startup.watch);
    assert!(!c("watch = false\n").unwrap().startup.watch);
    assert!(c("watch = true\n").unwrap().startup.watch);
    let e = format!("{:#}", c("\nwatch = \"no\"\n").unwrap_err());
    assert!(e.contains("watch") && e.contains("line 2") && e.contains("boolean"), "{e}");
}

#[test]
fn every_env_timeout_sets_its_own_bound_over_the_file_and_under_a_channel_table() {
    // Distinct values, so a variable wired to the wrong bound fails.
    let e = env(&[
        ("OPENAI_KEY", "k"),
        ("RELAY_CONNECT_TIMEOUT", "1.1"),
        ("RELAY_TLS_HANDSHAKE_TIMEOUT", "2.2"),
        ("RELAY_RESPONSE_HEADER_TIMEOUT", "3.3"),
        ("RELAY_STREAM_IDLE_TIMEOUT", "4.4"),
        ("RELAY_TIMEOUT", "5.5"),
    ]);
    let text = GOOD.replace(
        "[timeouts]\n",
        "[timeouts]\nconnect = 11\ntls_handshake = 12\nresponse_header = 13\ndns = 14\nclient_body = 15\n",
    );
    let c = Config::parse(&text, Path::new("."), &e).unwrap();
    let secs = |d: Duration| d.as_secs_f64();
    let t = c.live.timeouts;
    assert_eq!(
        [t.connect, t.tls_handshake, t.response_header, t.stream_idle, t.total].map(secs),
        [1.1, 2.2, 3.3, 4.4, 5.5]
    );
    // Keys without a variable keep the file's value.
    assert_eq!([t.dns, t.client_body].map(secs), [14.0, 15.0]);
    // The channel's table (total = 30) wins for that channel; the rest comes from the env.
    let ch = c.live.channels[0].timeouts;
    assert_eq!(
        [ch.connect, ch.tls_handshake, ch.response_header, ch.stream_idle, ch.total].map(secs),
        [1.1, 2.2, 3.3, 4.4, 30.0]
    );
    for name in ENV_TIMEOUTS {
        let mut bad = e.clone();
        bad.insert(name.to_string(), "0".into());
        let err = format!("{:#}", Config::parse(&text, Path::new("."), &bad).unwrap_err());
        assert!(err.contains(name) && err.contains("positive"), "{err}");
    }
}

/// One edit per start-up key, each changing that key alone, and the name a reload gives it.
const STARTUP_EDITS: [(&str, &str); 20] = [
    ("listen = \"127.0.0.1:1\"\n", "listen"),
    ("plugin_dir = \"elsewhere\"\n", "plugin_dir"),
    // `jobs.path` defaults to a folder of `data_dir`: pinned, so only `data_dir` moves.
    ("data_dir = \"elsewhere\"\n[jobs]\npath = \".relay/jobs\"\n", "data_dir"),
    ("watch = false\n", "watch"),
    ("dns_servers = [\"127.0.0.1\"]\n", "dns_servers"),
    ("[limits]\nplugin_memory_mib = 65\n", "limits.plugin_memory_mib"),
    // The wall bound defaults to a multiple of the call bound: pinned at its default.
    ("[limits]\nplugin_call_timeout_ms = 99\nplugin_wall_timeout_ms = 2000\n", "limits.plugin_call_timeout_ms"),
    ("[limits]\nplugin_instances = 9\n", "limits.plugin_instances"),
    ("[limits]\nplugin_instance_uses = 9\n", "limits.plugin_instance_uses"),
    ("[limits]\nplugin_streams_per_instance = 9\n", "limits.plugin_streams_per_instance"),
    ("[limits]\nplugin_wall_timeout_ms = 1999\n", "limits.plugin_wall_timeout_ms"),
    ("[limits]\nshutdown_grace = 31\n", "limits.shutdown_grace"),
    ("[jobs]\npath = \"j\"\n", "jobs.path"),
    ("[jobs]\nretention = 60\n", "jobs.retention"),
    ("[jobs]\nsweep_interval = 1\n", "jobs.sweep_interval"),
    ("[jobs]\nmax_running = 1\n", "jobs.max_running"),
    ("[jobs]\nmax_queued = 1\n", "jobs.max_queued"),
    ("[jobs]\nmax_bytes_per_job = 1\n", "jobs.max_bytes_per_job"),
    ("[jobs]\nmax_per_owner = 1\n", "jobs.max_per_owner"),
    ("[jobs]\nmax_store_bytes = 1\n", "jobs.max_store_bytes"),
];

#[test]
fn a_reload_names_each_changed_startup_key() {
    let parse = |text: &str| Config::parse(text, Path::new("/etc/relay"), &env(&[])).unwrap();
    let running = parse("");
    assert!(running.startup.changed_keys(&parse("").startup).is_empty());
    for (edit, key) in STARTUP_EDITS {
        assert_eq!(running.startup.changed_keys(&parse(edit).startup), [key], "after {edit:?}");
    }
    // Several at once: each named once, in a fixed order.
    let several = parse("listen = \"127.0.0.1:1\"\n[jobs]\nmax_running = 1\n");
    assert_eq!(running.startup.changed_keys(&several.startup), ["listen", "jobs.max_running"]);
}

#[test]
fn a_live_only_edit_names_no_startup_key() {
    let running = Config::parse("", Path::new("."), &env(&[])).unwrap();
    let live = "admin_token = \"0123456789abcdef\"\nmetrics_token = \"0123456789abcdef\"\n\
                [timeouts]\ndns = 1\nconnect = 1\ntls_handshake = 1\nresponse_header = 1\nstream_idle = 1\ntotal = 1\nclient_body = 1\n\
                [limits]\nmax_request_body = 10\nmax_response_body = 10\nmax_stream_event = 10\npool_idle_timeout = 1\n\
                pool_max_idle_per_host = 1\nclient_header_timeout = 1\nclient_idle_timeout = 1\nclient_write_timeout = 1\n\
                lingering_close = 1\nmax_connections = 1\nhttp2_max_concurrent_streams = 1\nhttp2_keep_alive_interval = 1\n\
                max_inflight_body_bytes = 10\n\
                [[channel]]\nname = \"a\"\nadapter = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"m\"]\n\
                [[token]]\nname = \"t\"\nkey = \"k\"\nmodels = [\"*\"]\n";
    let next = Config::parse(live, Path::new("."), &env(&[])).unwrap();
    assert_eq!(next.live.channels.len(), 1, "the edit parsed as meant");
    assert_eq!(next.live.limits.max_connections, 1);
    assert!(running.startup.changed_keys(&next.startup).is_empty());
}

#[test]
fn the_startup_keys_are_the_ones_the_docs_list() {
    let doc = include_str!("../../../docs/configuration.md");
    let line_start = doc.find("Start-up keys: ").expect("docs/configuration.md lists the start-up keys");
    let list = &doc[line_start..];
    let list = &list[..list.find(".\n").expect("the list ends with a full stop")];
    let documented: Vec<&str> = list.split('`').skip(1).step_by(2).collect();
    let named: Vec<&str> = STARTUP_EDITS.iter().map(|(_, key)| *key).collect();
    assert_eq!(documented, named);
}

#[test]
fn retry_defaults_overrides_and_errors() {
    let chan = |extra: &str| {
        format!("[[channel]]\nname = \"a\"\nadapter = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"m\"]\n{extra}")
    };
    let parse = |text: &str| Config::parse(text, Path::new("."), &env(&[]));
    let c = parse(&chan("")).unwrap();
    assert_eq!(c.live.channels[0].retry, RetryConfig::default());
    assert_eq!(c.live.channels[0].timeouts.first_token, None);
    // The top level is the base, a channel's table overrides it key by key.
    let text = format!(
        "[retry]\nattempts = 3\nbudget = 5\n[timeouts]\nfirst_token = 20\n{}",
        chan("[channel.retry]\nbackoff = 0.1\nmax_cooldown = 2\n[channel.timeouts]\nfirst_token = 1.5\n")
    );
    let r = parse(&text).unwrap().live.channels[0].clone();
    assert_eq!((r.retry.attempts, r.retry.budget), (3, Duration::from_secs(5)));
    assert_eq!((r.retry.backoff, r.retry.max_cooldown), (Duration::from_millis(100), Duration::from_secs(2)));
    assert_eq!(r.retry.backoff_max, DEFAULT_RETRY_BACKOFF_MAX);
    assert_eq!(r.timeouts.first_token, Some(Duration::from_millis(1500)));
    // Errors name the key and its line.
    let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
    let e = err("[retry]\nattempts = 0\n");
    assert!(e.contains("retry.attempts (line 2): must be from 1 to 10, got 0"), "{e}");
    let e = err(&chan("[channel.retry]\nbudget = -1\n"));
    assert!(e.contains("channel[0].retry.budget (line 7)"), "{e}");
    let e = err("[retry]\nbackoff = 2\nbackoff_max = 1\n");
    assert!(e.contains("retry.backoff_max (line 3): must be at least backoff (2 s)"), "{e}");
    let e = err("[timeouts]\nfirst_token = 0\n");
    assert!(e.contains("timeouts.first_token (line 2)"), "{e}");
    let e = err("[retry]\ntries = 2\n");
    assert!(e.contains("tries"), "{e}");
}

#[test]
fn malformed_events_is_skip_unless_set_per_channel() {
    let c = Config::parse(GOOD, Path::new("."), &env(&[("OPENAI_KEY", "k")])).unwrap();
    assert_eq!(c.live.channels[0].malformed_events, DEFAULT_MALFORMED_EVENTS);
    assert_eq!(DEFAULT_MALFORMED_EVENTS, MalformedEvents::Skip);
    let channel = |v: &str| {
        format!(
            "[[channel]]\nname = \"a\"\nadapter = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"m\"]\nmalformed_events = {v}\n"
        )
    };
    let c = Config::parse(&channel("\"fail\""), Path::new("."), &env(&[])).unwrap();
    assert_eq!(c.live.channels[0].malformed_events, MalformedEvents::Fail);
    let e = format!("{:#}", Config::parse(&channel("\"ignore\""), Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("channel[0] 'a'") && e.contains("malformed_events (line 6)"), "{e}");
    assert!(e.contains("\"skip\" or \"fail\""), "{e}");
    let e = format!("{:#}", Config::parse(&channel("true"), Path::new("."), &env(&[])).unwrap_err());
    assert!(e.contains("malformed_events") && e.contains("line 6"), "{e}");
}

#[test]
fn native_is_the_adapters_list_unless_a_channel_narrows_it() {
    let c = Config::parse(GOOD, Path::new("."), &env(&[("OPENAI_KEY", "k")])).unwrap();
    assert_eq!(c.live.channels[0].native, DEFAULT_NATIVE);
    assert_eq!(DEFAULT_NATIVE, None);
    let channel = |v: &str| {
        format!(
            "[[channel]]\nname = \"a\"\nadapter = \"openai\"\nbase_url = \"http://x\"\nmodels = [\"m\"]\nnative = {v}\n"
        )
    };
    let parse = |v: &str| Config::parse(&channel(v), Path::new("."), &env(&[]));
    let c = parse("[]").unwrap();
    assert_eq!(c.live.channels[0].native, Some(Native { apis: vec![], line: 6 }));
    let c = parse("[\"responses\", \"messages\"]").unwrap();
    assert_eq!(c.live.channels[0].native.as_ref().unwrap().apis, [Endpoint::Responses, Endpoint::Messages]);
    for (bad, says) in [
        ("[\"chat_completions\"]", "\"chat_completions\" is not a client API an adapter speaks natively"),
        ("[\"responses\", \"responses\"]", "\"responses\" is listed twice"),
    ] {
        let e = format!("{:#}", parse(bad).unwrap_err());
        assert!(e.contains("channel[0] 'a'") && e.contains("native (line 6)") && e.contains(says), "{e}");
    }
    let e = format!("{:#}", parse("\"responses\"").unwrap_err());
    assert!(e.contains("native") && e.contains("line 6"), "{e}");

    // Against the adapter's own list, once it is loaded.
    let channels = parse("[\"responses\"]").unwrap().live.channels;
    assert!(check_native(&channels, |_| None).is_ok(), "an adapter not loaded is checked when it is");
    assert!(check_native(&channels, |_| Some(vec![Endpoint::Responses])).is_ok());
    let e = format!("{:#}", check_native(&channels, |_| Some(vec![Endpoint::Messages])).unwrap_err());
    assert!(
        e.contains("channel[0] 'a': native (line 6): adapter 'openai' does not speak \"responses\" natively (it speaks: \"messages\")"),
        "{e}"
    );
}
