//! The upstream client: hyper-util's pooled client over a connector that owns the DNS,
//! connect and TLS handshake bounds and counts every open connection.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{Limits, Timeouts};
use crate::metrics::{Metrics, OwnedGaugeGuard};

/// Why a connection could not be made. The stage names match `relay_timeouts_total{stage}`.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{stage} timeout after {}", crate::config::fmt_secs(*.after))]
    Timeout { stage: &'static str, after: Duration },
    #[error("cannot resolve {host}: {source}")]
    Dns { host: String, source: io::Error },
    #[error("connection to {addr} failed: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls { host: String, source: io::Error },
    #[error("invalid upstream address: {0}")]
    Address(String),
}

/// The process's resolver: asynchronous (no blocking thread per lookup, so a slow name
/// server costs a timer, not a thread, past the bound) with a cache honouring record TTLs.
static RESOLVER: OnceLock<hickory_resolver::TokioResolver> = OnceLock::new();

/// Entries the resolver caches: a relay talks to a handful of vendor hosts.
const DNS_CACHE_ENTRIES: u64 = 1024;
/// The resolver's own bound per query, and tries per name server: its background work
/// ends within their product even when the caller stopped waiting at `timeouts.dns`.
const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const DNS_ATTEMPTS: usize = 2;

/// Set up the resolver once, at start-up: `servers` from `dns_servers`, or the system's
/// (`/etc/resolv.conf`, and `/etc/hosts` always). Later calls keep the first resolver.
pub fn init_dns(servers: &[SocketAddr]) {
    let _ = RESOLVER.get_or_init(|| build_resolver(servers));
}

fn resolver() -> &'static hickory_resolver::TokioResolver {
    RESOLVER.get_or_init(|| build_resolver(&[]))
}

fn build_resolver(servers: &[SocketAddr]) -> hickory_resolver::TokioResolver {
    use hickory_resolver::config::{NameServerConfig, ResolverConfig};
    use hickory_resolver::net::runtime::TokioRuntimeProvider;
    let provider = TokioRuntimeProvider::default();
    let mut builder = if servers.is_empty() {
        hickory_resolver::TokioResolver::builder(provider.clone()).unwrap_or_else(|e| {
            // No resolv.conf (a minimal container): host names resolve from /etc/hosts only.
            tracing::warn!(error = %e, "cannot read the system's DNS configuration; resolving from /etc/hosts only");
            hickory_resolver::TokioResolver::builder_with_config(ResolverConfig::default(), provider)
        })
    } else {
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut ns = NameServerConfig::udp_and_tcp(s.ip());
                for c in &mut ns.connections {
                    c.port = s.port();
                }
                ns
            })
            .collect();
        hickory_resolver::TokioResolver::builder_with_config(ResolverConfig::from_name_servers(name_servers), provider)
    };
    let opts = builder.options_mut();
    opts.cache_size = DNS_CACHE_ENTRIES;
    opts.timeout = DNS_QUERY_TIMEOUT;
    opts.attempts = DNS_ATTEMPTS;
    builder.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the DNS resolver; only IP addresses will work upstream");
        hickory_resolver::TokioResolver::builder_with_config(
            hickory_resolver::config::ResolverConfig::default(),
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
        .build()
        .expect("an empty resolver configuration builds")
    })
}

#[derive(Clone)]
pub struct Connector {
    dns_timeout: Duration,
    connect_timeout: Duration,
    tls_timeout: Duration,
    tls: TlsConnector,
    metrics: Arc<Metrics>,
}

/// The process-wide TLS client configuration: webpki roots, ring, TLS 1.2 and 1.3.
pub fn tls_config() -> Arc<rustls::ClientConfig> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The pool speaks HTTP/1.1 upstream; offering h2 here would need an h2 connection path.
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<UpstreamIo>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(uri).await })
    }
}

impl Connector {
    async fn connect(self, uri: http::Uri) -> Result<TokioIo<UpstreamIo>, ConnectError> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(ConnectError::Address(format!("unsupported scheme {other:?}"))),
        };
        let host = uri.host().ok_or_else(|| ConnectError::Address(uri.to_string()))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });

        let addrs = self.resolve(&host, port).await?;
        let tcp = tokio::time::timeout(self.connect_timeout, connect_tcp(&host, port, &addrs))
            .await
            .map_err(|_| ConnectError::Timeout { stage: "connect", after: self.connect_timeout })??;
        let _ = tcp.set_nodelay(true);
        // Counted from the moment the socket exists, so a stuck handshake shows in the gauge.
        let guard = OwnedGaugeGuard::new(self.metrics.clone(), |m| &m.upstream_connections_open);

        let inner = if https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| ConnectError::Address(format!("{host}: {e}")))?;
            let tls = tokio::time::timeout(self.tls_timeout, self.tls.connect(name, tcp))
                .await
                .map_err(|_| ConnectError::Timeout { stage: "tls_handshake", after: self.tls_timeout })?
                .map_err(|source| ConnectError::Tls { host: host.clone(), source })?;
            Inner::Tls(Box::new(tls))
        } else {
            Inner::Plain(tcp)
        };
        Ok(TokioIo::new(UpstreamIo { inner, _open: guard }))
    }
}

impl Connector {
    /// The DNS stage: an IP address as it is, a name through the cached resolver under
    /// `timeouts.dns`. Counted in `relay_dns_lookups_total{result}`.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let lookup = tokio::time::timeout(self.dns_timeout, resolver().lookup_ip(host)).await;
        let result = match lookup {
            Err(_) => {
                self.metrics.dns_lookups.inc(["timeout"]);
                return Err(ConnectError::Timeout { stage: "dns", after: self.dns_timeout });
            }
            Ok(Err(e)) => Err(ConnectError::Dns { host: host.to_string(), source: io::Error::other(e.to_string()) }),
            Ok(Ok(ips)) => {
                let addrs: Vec<_> = ips.iter().map(|ip| SocketAddr::new(ip, port)).collect();
                if addrs.is_empty() {
                    Err(ConnectError::Dns {
                        host: host.to_string(),
                        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
                    })
                } else {
                    Ok(addrs)
                }
            }
        };
        self.metrics.dns_lookups.inc([if result.is_ok() { "ok" } else { "error" }]);
        result
    }
}

async fn connect_tcp(host: &str, port: u16, addrs: &[SocketAddr]) -> Result<TcpStream, ConnectError> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some((addr.to_string(), e)),
        }
    }
    let (addr, source) =
        last.unwrap_or_else(|| (format!("{host}:{port}"), io::Error::new(io::ErrorKind::NotFound, "no addresses")));
    Err(ConnectError::Connect { addr, source })
}

enum Inner {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// An upstream connection; the gauge of open connections goes down when it is dropped.
pub struct UpstreamIo {
    inner: Inner,
    _open: OwnedGaugeGuard,
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl tokio::io::AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().inner {
            Inner::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Inner::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }
}

pub type HttpClient = Client<Connector, Full<Bytes>>;

/// What shapes a channel's upstream connections: its vendor's origin (scheme, host, port),
/// the DNS, connect and TLS bounds its connector applies, and the pool's limits. A reload
/// keeps a channel's pooled client, warm connections included, while this is unchanged; a
/// channel whose key changed gets a new client, and the old one closes its connections as
/// the requests still using them finish. The channel's name is part of the key because
/// each channel has its own pool, as at start-up.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    channel: String,
    origin: String,
    dns: Duration,
    connect: Duration,
    tls_handshake: Duration,
    idle_timeout: Duration,
    max_idle_per_host: usize,
}

impl PoolKey {
    pub fn of(channel: &crate::config::Channel, limits: &Limits) -> PoolKey {
        // The path prefix does not shape a connection; an unparsable URL (refused by
        // validation already) is compared whole.
        let origin = match channel.base_url.parse::<http::Uri>() {
            Ok(u) => {
                let scheme = u.scheme_str().unwrap_or("");
                let port = u.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
                format!("{scheme}://{}:{port}", u.host().unwrap_or("").to_ascii_lowercase())
            }
            Err(_) => channel.base_url.clone(),
        };
        PoolKey {
            channel: channel.name.clone(),
            origin,
            dns: channel.timeouts.dns,
            connect: channel.timeouts.connect,
            tls_handshake: channel.timeouts.tls_handshake,
            idle_timeout: limits.pool_idle_timeout,
            max_idle_per_host: limits.pool_max_idle_per_host,
        }
    }
}

/// One pooled client per channel, so each channel's connect and TLS bounds apply.
pub fn client(
    timeouts: &Timeouts,
    limits: &Limits,
    tls: Arc<rustls::ClientConfig>,
    metrics: Arc<Metrics>,
) -> HttpClient {
    let connector = Connector {
        dns_timeout: timeouts.dns,
        connect_timeout: timeouts.connect,
        tls_timeout: timeouts.tls_handshake,
        tls: TlsConnector::from(tls),
        metrics,
    };
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(limits.pool_idle_timeout)
        .pool_max_idle_per_host(limits.pool_max_idle_per_host)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}

/// The connector's own error, if that is what a client error came from.
pub fn connect_error(err: &hyper_util::client::legacy::Error) -> Option<&ConnectError> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = source {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        source = e.source();
    }
    None
}

/// Send a request; `Incoming` is the response body the caller must read or drop.
pub type UpstreamResponse = http::Response<Incoming>;
