//! The routing snapshot: tokens by key, channels by model, one pooled client per channel.
//! Built whole from a `LiveConfig` and swapped whole, so a request sees one configuration.
//! It holds only the live part of the config: start-up keys stay with the process.

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;

use crate::config::{Channel, LiveConfig, Token};
use crate::metrics::Metrics;
use crate::upstream::{self, HttpClient, PoolKey};

pub struct Snapshot {
    /// The keys a reload applies; what the process started with is not here.
    pub config: LiveConfig,
    tokens: crate::auth::KeyIndex,
    routes: HashMap<String, Vec<usize>>,
    clients: Vec<HttpClient>,
    /// What shaped each client, for `Snapshot::reusing`.
    pool_keys: Vec<PoolKey>,
}

impl Snapshot {
    pub fn new(config: LiveConfig, tls: Arc<rustls::ClientConfig>, metrics: Arc<Metrics>) -> Snapshot {
        Self::build(config, tls, metrics, None)
    }

    /// A snapshot for a reloaded config: each channel whose `PoolKey` is unchanged keeps
    /// `previous`'s pooled client (its warm connections with it); the others get new ones.
    pub fn reusing(
        config: LiveConfig,
        tls: Arc<rustls::ClientConfig>,
        metrics: Arc<Metrics>,
        previous: &Snapshot,
    ) -> Snapshot {
        Self::build(config, tls, metrics, Some(previous))
    }

    /// How many of this snapshot's clients were carried over from `previous`.
    pub fn pools_kept(&self, previous: &Snapshot) -> usize {
        self.pool_keys.iter().filter(|k| previous.pool_keys.contains(k)).count()
    }

    fn build(
        config: LiveConfig,
        tls: Arc<rustls::ClientConfig>,
        metrics: Arc<Metrics>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let tokens = crate::auth::KeyIndex::new(config.tokens.iter().map(|t| t.key.as_str()));
        let mut routes: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in config.channels.iter().enumerate() {
            for m in &c.models {
                routes.entry(m.clone()).or_default().push(i);
            }
        }
        let kept: HashMap<&PoolKey, &HttpClient> =
            previous.map(|p| p.pool_keys.iter().zip(&p.clients).collect()).unwrap_or_default();
        let pool_keys: Vec<PoolKey> = config.channels.iter().map(|c| PoolKey::of(c, &config.limits)).collect();
        let clients = config
            .channels
            .iter()
            .zip(&pool_keys)
            .map(|(c, key)| match kept.get(key) {
                // A clone shares the pool: same connections, same connector.
                Some(&client) => client.clone(),
                None => upstream::client(&c.timeouts, &config.limits, tls.clone(), metrics.clone()),
            })
            .collect();
        Snapshot { config, tokens, routes, clients, pool_keys }
    }

    pub fn token(&self, key: &str) -> Option<&Token> {
        self.tokens.get(key).map(|i| &self.config.tokens[i])
    }

    /// Models a token may use, sorted, each with the adapter of its first channel.
    pub fn models_for(&self, token: &Token) -> Vec<(&str, &str)> {
        let mut v: Vec<(&str, &str)> = self
            .routes
            .iter()
            .filter(|(m, _)| token.allows(m))
            .map(|(m, chans)| (m.as_str(), self.config.channels[chans[0]].adapter.as_str()))
            .collect();
        v.sort();
        v
    }

    pub fn serves(&self, model: &str) -> bool {
        self.routes.contains_key(model)
    }

    /// Every (from, to) a request may fail over along: channels serving a common model,
    /// `to` of the same or a lower priority. Each pair once.
    pub fn failover_pairs(&self) -> Vec<(&str, &str)> {
        let mut pairs = std::collections::BTreeSet::new();
        for idx in self.routes.values() {
            for &a in idx {
                for &b in idx {
                    let (from, to) = (&self.config.channels[a], &self.config.channels[b]);
                    if a != b && to.priority <= from.priority {
                        pairs.insert((from.name.as_str(), to.name.as_str()));
                    }
                }
            }
        }
        pairs.into_iter().collect()
    }

    /// The channels to try for `model`: highest priority first, weighted-random among
    /// equal priorities, so load spreads by weight and failover follows priority.
    pub fn candidates(&self, model: &str) -> Vec<(&Channel, &HttpClient)> {
        let Some(idx) = self.routes.get(model) else { return Vec::new() };
        let mut rng = rand::rng();
        let mut keyed: Vec<(i64, f64, usize)> = idx
            .iter()
            .map(|&i| {
                let c = &self.config.channels[i];
                // Efraimidis-Spirakis: sorting by u^(1/w) draws a weighted order.
                let u: f64 = rng.random_range(f64::EPSILON..1.0);
                (c.priority, u.powf(1.0 / f64::from(c.weight)), i)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
        keyed.into_iter().map(|(_, _, i)| (&self.config.channels[i], &self.clients[i])).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use std::path::Path;

    fn snapshot(text: &str) -> Snapshot {
        let cfg = Config::parse(text, Path::new("."), &HashMap::new()).unwrap().live;
        Snapshot::new(cfg, upstream::tls_config(), Arc::new(Metrics::default()))
    }

    #[tokio::test]
    async fn priority_then_weight() {
        let s = snapshot(
            r#"
[[channel]]
name = "backup"
adapter = "openai"
base_url = "http://127.0.0.1:1"
models = ["m"]
priority = 0
[[channel]]
name = "heavy"
adapter = "openai"
base_url = "http://127.0.0.1:2"
models = ["m"]
priority = 5
weight = 9
[[channel]]
name = "light"
adapter = "openai"
base_url = "http://127.0.0.1:3"
models = ["m", "other"]
priority = 5
weight = 1
"#,
        );
        let mut heavy_first = 0;
        for _ in 0..1000 {
            let order: Vec<&str> = s.candidates("m").iter().map(|(c, _)| c.name.as_str()).collect();
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], "backup");
            if order[0] == "heavy" {
                heavy_first += 1;
            }
        }
        // 90% expected; the bounds are loose so the test cannot flake.
        assert!((800..=980).contains(&heavy_first), "{heavy_first}");
        assert!(s.candidates("nope").is_empty());
        assert!(s.serves("other"));
    }

    #[tokio::test]
    async fn a_reload_keeps_the_pools_whose_connection_settings_are_unchanged() {
        let chan = |name: &str, url: &str, extra: &str| {
            format!(
                "[[channel]]\nname = \"{name}\"\nadapter = \"openai\"\nbase_url = \"{url}\"\nmodels = [\"m\"]\n{extra}\n"
            )
        };
        let running = snapshot(&(chan("a", "http://127.0.0.1:1/v1", "") + &chan("b", "https://vendor.example", "")));
        let reload = |text: String| {
            let cfg = Config::parse(&text, Path::new("."), &HashMap::new()).unwrap().live;
            Snapshot::reusing(cfg, upstream::tls_config(), Arc::new(Metrics::default()), &running)
        };
        // A path, a key or a header does not shape a connection; an explicit default port neither.
        let same = chan("a", "http://127.0.0.1:1/v2", "api_key = \"k\"\nheaders = { \"x\" = \"y\" }")
            + &chan("b", "https://VENDOR.example:443/v1", "");
        assert_eq!(reload(same).pools_kept(&running), 2);
        // A port, a connect bound or a pool limit does.
        let port = chan("a", "http://127.0.0.1:2/v1", "") + &chan("b", "https://vendor.example", "");
        assert_eq!(reload(port).pools_kept(&running), 1);
        let connect = chan("a", "http://127.0.0.1:1/v1", "[channel.timeouts]\nconnect = 1")
            + &chan("b", "https://vendor.example", "");
        assert_eq!(reload(connect).pools_kept(&running), 1);
        let pool = format!("[limits]\npool_max_idle_per_host = 3\n{}", chan("a", "http://127.0.0.1:1/v1", ""));
        assert_eq!(reload(pool).pools_kept(&running), 0);
        // A renamed channel has a pool of its own.
        let renamed = chan("c", "http://127.0.0.1:1/v1", "") + &chan("b", "https://vendor.example", "");
        assert_eq!(reload(renamed).pools_kept(&running), 1);
    }
}
