//! The upstream client: hyper-util's pooled client over a connector that owns the
//! connect and TLS handshake bounds and counts every open connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
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

#[derive(Clone)]
pub struct Connector {
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

        let tcp = tokio::time::timeout(self.connect_timeout, connect_tcp(&host, port))
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

async fn connect_tcp(host: &str, port: u16) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Dns { host: host.to_string(), source })?
        .collect();
    let mut last = None;
    for addr in &addrs {
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

/// One pooled client per channel, so each channel's connect and TLS bounds apply.
pub fn client(
    timeouts: &Timeouts,
    limits: &Limits,
    tls: Arc<rustls::ClientConfig>,
    metrics: Arc<Metrics>,
) -> HttpClient {
    let connector = Connector {
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
