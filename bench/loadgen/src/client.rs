//! One HTTP/1.1 keep-alive connection per virtual user, and the check of each answer.

use std::net::{SocketAddr, TcpListener};

use anyhow::{Context, Result, anyhow, bail};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub type Sender = SendRequest<Full<Bytes>>;

/// What makes an answer complete.
#[derive(Clone, Copy)]
pub struct Check {
    pub stream: bool,
    /// Fewest `data:` events in a complete stream, `[DONE]` included.
    pub min_events: usize,
}

/// Where and what to send.
pub struct Target {
    uri: Uri,
    addr: SocketAddr,
    headers: HeaderMap,
    body: Bytes,
    check: Check,
}

impl Target {
    pub fn new(url: &str, extra: &[String], body: String, check: Check) -> Result<Target> {
        let uri: Uri = url.parse().with_context(|| format!("invalid url {url}"))?;
        let authority = uri.authority().ok_or_else(|| anyhow!("url {url} has no host:port"))?.clone();
        let addr: SocketAddr =
            authority.as_str().parse().with_context(|| format!("{authority} is not an ip:port (loopback only)"))?;
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_str(authority.as_str())?);
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        for h in extra {
            let (name, value) = h.split_once(':').ok_or_else(|| anyhow!("header '{h}' is not 'name: value'"))?;
            headers.append(HeaderName::from_bytes(name.trim().as_bytes())?, HeaderValue::from_str(value.trim())?);
        }
        Ok(Target { uri, addr, headers, body: Bytes::from(body), check })
    }

    pub async fn connect(&self) -> Result<Sender> {
        let stream = TcpStream::connect(self.addr).await.with_context(|| format!("connect {}", self.addr))?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // The driver ends when the connection closes or the sender is dropped.
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = Uri::from(self.uri.path_and_query().expect("a parsed url has a path").clone());
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// Send the request and wait for the response head.
    pub async fn head(&self, sender: &mut Sender) -> Result<http::Response<Incoming>> {
        sender.ready().await?;
        Ok(sender.send_request(self.request()).await?)
    }

    /// Read the body to its end and check it is a complete answer.
    pub async fn finish(&self, resp: http::Response<Incoming>) -> Result<()> {
        let status = resp.status();
        let mut body = BytesMut::new();
        let mut incoming = resp.into_body();
        while let Some(frame) = incoming.frame().await {
            if let Ok(data) = frame?.into_data() {
                body.extend_from_slice(&data);
            }
        }
        if status != http::StatusCode::OK {
            bail!("status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
        }
        if self.check.stream {
            let events = count_data_events(&body);
            if !body.trim_ascii_end().ends_with(b"data: [DONE]") {
                bail!("stream without [DONE] after {events} events: ...{}", tail(&body));
            }
            if events < self.check.min_events {
                bail!("stream of {events} events, expected at least {}", self.check.min_events);
            }
        } else if !body.windows(9).any(|w| w == b"\"choices\"") {
            bail!("answer without choices: {}", String::from_utf8_lossy(&body[..body.len().min(200)]));
        }
        Ok(())
    }

    /// One full exchange on an open connection.
    pub async fn exchange(&self, sender: &mut Sender) -> Result<()> {
        let resp = self.head(sender).await?;
        self.finish(resp).await
    }
}

/// SSE `data:` lines: each event the relay and the mocks send carries exactly one.
fn count_data_events(body: &[u8]) -> usize {
    let starts = usize::from(body.starts_with(b"data:"));
    starts + body.windows(6).filter(|w| *w == b"\ndata:").count()
}

fn tail(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[body.len().saturating_sub(200)..]).into_owned()
}

/// Distinct free loopback ports: all bound at once, so none is handed out twice.
pub fn free_ports(count: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> =
        (0..count).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<_>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<_>>()?)
}
