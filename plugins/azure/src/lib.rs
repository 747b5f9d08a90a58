//! The azure adapter (to be written).

use relay_plugin_kit::prelude::*;

pub struct Stub;

impl Adapter for Stub {
    type Stream = relay_plugin_kit::NoStream;

    fn info() -> PluginInfo {
        PluginInfo {
            name: "azure".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "not written yet".into(),
            endpoints: vec![Endpoint::ChatCompletions],
            auth: AuthScheme::Bearer,
            stream_format: StreamFormat::Sse,
        }
    }

    fn transform_request(_ctx: &CallContext, _body: &str) -> Result<UpstreamRequest, AdapterError> {
        Err(unsupported("not written yet"))
    }
}

relay_plugin_kit::export_adapter!(Stub);
