//! Contract `relay:adapter@0.2.0` (`wit/adapter.wit`, the current one): its generated
//! bindings and their conversions to and from the host model, field for field.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "adapter-plugin",
    exports: { default: async },
});

use self::relay::adapter::types as t;
use crate::model as m;

/// The WIT the bindings above are generated from: its `package` line names the version.
pub const WIT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/adapter.wit"));

impl From<t::Endpoint> for m::Endpoint {
    fn from(e: t::Endpoint) -> Self {
        match e {
            t::Endpoint::ChatCompletions => m::Endpoint::ChatCompletions,
            t::Endpoint::Embeddings => m::Endpoint::Embeddings,
            t::Endpoint::Responses => m::Endpoint::Responses,
            t::Endpoint::Messages => m::Endpoint::Messages,
            t::Endpoint::MessagesCountTokens => m::Endpoint::MessagesCountTokens,
        }
    }
}

impl From<m::Endpoint> for t::Endpoint {
    fn from(e: m::Endpoint) -> Self {
        match e {
            m::Endpoint::ChatCompletions => t::Endpoint::ChatCompletions,
            m::Endpoint::Embeddings => t::Endpoint::Embeddings,
            m::Endpoint::Responses => t::Endpoint::Responses,
            m::Endpoint::Messages => t::Endpoint::Messages,
            m::Endpoint::MessagesCountTokens => t::Endpoint::MessagesCountTokens,
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
            native: i.native.into_iter().map(Into::into).collect(),
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

impl From<&m::CallContext> for t::CallContext {
    fn from(c: &m::CallContext) -> Self {
        t::CallContext {
            request_id: c.request_id.clone(),
            endpoint: c.endpoint.into(),
            model: c.model.clone(),
            stream: c.stream,
            include_usage: c.include_usage,
            settings: c.settings.clone(),
        }
    }
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
            input: u.input_tokens,
            output: u.output_tokens,
            total: u.total_tokens,
            cached_input: u.cached_input_tokens,
            cache_creation_input: u.cache_creation_input_tokens,
            reasoning: u.reasoning_tokens,
        }
    }
}

impl From<t::ErrorClass> for m::ErrorClass {
    fn from(c: t::ErrorClass) -> Self {
        match c {
            t::ErrorClass::InvalidRequest => m::ErrorClass::InvalidRequest,
            t::ErrorClass::ContextLengthExceeded => m::ErrorClass::ContextLengthExceeded,
            t::ErrorClass::ContentFiltered => m::ErrorClass::ContentFiltered,
            t::ErrorClass::Authentication => m::ErrorClass::Authentication,
            t::ErrorClass::Permission => m::ErrorClass::Permission,
            t::ErrorClass::NotFound => m::ErrorClass::NotFound,
            t::ErrorClass::RateLimited => m::ErrorClass::RateLimited,
            t::ErrorClass::Overloaded => m::ErrorClass::Overloaded,
            t::ErrorClass::ServerError => m::ErrorClass::ServerError,
        }
    }
}

impl From<t::RelayResponse> for m::RelayResponse {
    fn from(r: t::RelayResponse) -> Self {
        m::RelayResponse {
            status: r.status,
            body: r.body,
            usage: r.usage.map(Into::into),
            error_class: r.error_class.map(Into::into),
        }
    }
}

impl From<m::StreamEvent> for t::StreamEvent {
    fn from(e: m::StreamEvent) -> Self {
        t::StreamEvent { event: e.event, data: e.data }
    }
}

fn output_event(e: t::OutputEvent) -> m::OutputEvent {
    m::OutputEvent { name: e.name, data: e.data }
}

impl From<t::StreamOutput> for m::StreamOutput {
    fn from(o: t::StreamOutput) -> Self {
        m::StreamOutput {
            events: o.events.into_iter().map(output_event).collect(),
            done: o.done,
            usage: o.usage.map(Into::into),
            skipped: o.skipped,
        }
    }
}

impl From<t::StreamEnd> for m::StreamEnd {
    fn from(e: t::StreamEnd) -> Self {
        m::StreamEnd { events: e.events.into_iter().map(output_event).collect(), usage: e.usage.map(Into::into) }
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
