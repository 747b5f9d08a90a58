//! Contract `relay:adapter@0.1.0` (`wit/since_v0.1.0/adapter.wit`), linked so adapters built
//! against it keep loading: its generated bindings and their conversions to and from the
//! host model. What 0.1 lacks converts to its neutral value: no native APIs, no error
//! class, usage without its details, chunks as unnamed events.

wasmtime::component::bindgen!({
    path: "../wit/since_v0.1.0",
    world: "adapter-plugin",
    exports: { default: async },
});

use self::relay::adapter::types as t;
use crate::model as m;

/// The WIT the bindings above are generated from: its `package` line names the version.
pub const WIT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/since_v0.1.0/adapter.wit"));

impl From<t::Endpoint> for m::Endpoint {
    fn from(e: t::Endpoint) -> Self {
        match e {
            t::Endpoint::ChatCompletions => m::Endpoint::ChatCompletions,
            t::Endpoint::Embeddings => m::Endpoint::Embeddings,
        }
    }
}

/// The call's endpoint in 0.1 terms; 0.1 knows only the canonical ones, so a call in another
/// client API cannot reach such an adapter (it is answered 400, not trapped).
fn endpoint(e: m::Endpoint) -> Result<t::Endpoint, m::AdapterError> {
    match e {
        m::Endpoint::ChatCompletions => Ok(t::Endpoint::ChatCompletions),
        m::Endpoint::Embeddings => Ok(t::Endpoint::Embeddings),
        m::Endpoint::Responses | m::Endpoint::Messages | m::Endpoint::MessagesCountTokens => {
            Err(m::AdapterError::Unsupported(format!(
                "the adapter speaks contract {}, which has no '{}' endpoint",
                super::Contract::V0_1.version(),
                e.as_str()
            )))
        }
    }
}

impl From<t::PluginInfo> for m::AdapterInfo {
    fn from(i: t::PluginInfo) -> Self {
        m::AdapterInfo {
            name: i.name,
            version: i.version,
            description: i.description,
            endpoints: i.endpoints.into_iter().map(Into::into).collect(),
            native: Vec::new(),
            auth: match i.auth {
                t::AuthScheme::Bearer => m::AuthScheme::Bearer,
                t::AuthScheme::Header(h) => m::AuthScheme::Header(h),
                t::AuthScheme::Query(q) => m::AuthScheme::Query(q),
                t::AuthScheme::None => m::AuthScheme::None,
            },
            stream_format: match i.stream_format {
                t::StreamFormat::Sse => m::StreamFormat::Sse,
                t::StreamFormat::Ndjson => m::StreamFormat::Ndjson,
            },
        }
    }
}

/// The call context in 0.1 terms, or why it has none.
pub fn context(c: &m::CallContext) -> Result<t::CallContext, m::AdapterError> {
    Ok(t::CallContext {
        request_id: c.request_id.clone(),
        endpoint: endpoint(c.endpoint)?,
        model: c.model.clone(),
        stream: c.stream,
        include_usage: c.include_usage,
        settings: c.settings.clone(),
    })
}

fn header_in(h: t::Header) -> m::Header {
    m::Header { name: h.name, value: h.value }
}

fn header_out(h: &m::Header) -> t::Header {
    t::Header { name: h.name.clone(), value: h.value.clone() }
}

impl From<t::UpstreamRequest> for m::UpstreamRequest {
    fn from(r: t::UpstreamRequest) -> Self {
        m::UpstreamRequest {
            method: r.method,
            path: r.path,
            headers: r.headers.into_iter().map(header_in).collect(),
            body: r.body,
        }
    }
}

impl From<&m::UpstreamResponse> for t::UpstreamResponse {
    fn from(r: &m::UpstreamResponse) -> Self {
        t::UpstreamResponse {
            status: r.status,
            headers: r.headers.iter().map(header_out).collect(),
            body: r.body.clone(),
        }
    }
}

impl From<t::Usage> for m::Usage {
    fn from(u: t::Usage) -> Self {
        m::Usage {
            input: u.prompt_tokens,
            output: u.completion_tokens,
            total: u.total_tokens,
            cached_input: None,
            cache_creation_input: None,
            reasoning: None,
        }
    }
}

impl From<t::RelayResponse> for m::RelayResponse {
    fn from(r: t::RelayResponse) -> Self {
        m::RelayResponse { status: r.status, body: r.body, usage: r.usage.map(Into::into), error_class: None }
    }
}

impl From<m::StreamEvent> for t::StreamEvent {
    fn from(e: m::StreamEvent) -> Self {
        t::StreamEvent { event: e.event, data: e.data }
    }
}

/// 0.1 chunks are chat completion chunks: events without a name.
fn chunk(data: String) -> m::OutputEvent {
    m::OutputEvent { name: None, data }
}

impl From<t::StreamOutput> for m::StreamOutput {
    fn from(o: t::StreamOutput) -> Self {
        m::StreamOutput {
            events: o.chunks.into_iter().map(chunk).collect(),
            done: o.done,
            usage: o.usage.map(Into::into),
            skipped: Vec::new(),
        }
    }
}

impl From<t::StreamEnd> for m::StreamEnd {
    fn from(e: t::StreamEnd) -> Self {
        m::StreamEnd { events: e.chunks.into_iter().map(chunk).collect(), usage: e.usage.map(Into::into) }
    }
}

impl From<t::AdapterError> for m::AdapterError {
    fn from(e: t::AdapterError) -> Self {
        match e {
            t::AdapterError::InvalidRequest(s) => m::AdapterError::InvalidRequest(s),
            t::AdapterError::Unsupported(s) => m::AdapterError::Unsupported(s),
            t::AdapterError::InvalidUpstream(s) => m::AdapterError::InvalidUpstream(s),
            t::AdapterError::Internal(s) => m::AdapterError::Internal(s),
        }
    }
}
