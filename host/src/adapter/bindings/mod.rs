//! The adapter contract versions this host links, and the one seam between them and the
//! host: [`Pre`] and [`Instance`] call an adapter of either version in host model types
//! (`crate::model`), converting at this edge. The generated types never leave `adapter/`.
//!
//! Versioning rule: a change that breaks an adapter built against the current contract is
//! a new version. The host links the current version and the previous one; adding a version
//! means a new module here, a variant of [`Contract`], [`Pre`] and [`Instance`], and the
//! previous oldest one dropped.

pub mod v0_1;
pub mod v0_2;

use std::sync::LazyLock;

use anyhow::Result;
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, ResourceAny};

use super::engine::AdapterState;
use crate::model::{
    AdapterError, AdapterInfo, CallContext, RelayResponse, StreamEnd, StreamEvent, StreamOutput, UpstreamRequest,
    UpstreamResponse,
};

/// A contract version the host links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    V0_2,
    V0_1,
}

/// The `package relay:adapter@X;` line of a WIT file: the package with its version.
fn package(wit: &'static str) -> &'static str {
    wit.lines()
        .find_map(|l| l.trim().strip_prefix("package "))
        .and_then(|p| p.trim().strip_suffix(';'))
        .expect("the contract's WIT names its package")
}

static PACKAGES: LazyLock<[&'static str; 2]> = LazyLock::new(|| [package(v0_2::WIT), package(v0_1::WIT)]);

impl Contract {
    /// Newest first: a component is bound to the first one it exports.
    pub const ALL: [Contract; 2] = [Contract::V0_2, Contract::V0_1];

    /// `relay:adapter@0.2.0`, as its WIT names it.
    pub fn package(self) -> &'static str {
        PACKAGES[self as usize]
    }

    /// `0.2.0`.
    pub fn version(self) -> &'static str {
        let p = self.package();
        p.rsplit_once('@').map_or(p, |(_, v)| v)
    }

    /// The export an adapter of this version has: `relay:adapter/adapter@0.2.0`.
    pub fn export(self) -> String {
        let p = self.package();
        match p.split_once('@') {
            Some((name, v)) => format!("{name}/adapter@{v}"),
            None => format!("{p}/adapter"),
        }
    }

    /// Every linked version's export, for messages: `relay:adapter/adapter@0.2.0 or ...@0.1.0`.
    pub fn exports() -> String {
        Contract::ALL.map(Contract::export).join(" or ")
    }

    /// The newest linked version whose adapter export the component has, or why none.
    pub fn of(component: &Component, engine: &wasmtime::Engine) -> Result<Contract, String> {
        if let Some(c) = Contract::ALL.into_iter().find(|c| component.get_export_index(None, c.export()).is_some()) {
            return Ok(c);
        }
        let unversioned = Contract::V0_2.export();
        let unversioned = unversioned.split('@').next().unwrap_or_default();
        let seen: Vec<String> = component
            .component_type()
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .filter(|n| n.starts_with(unversioned))
            .collect();
        Err(if seen.is_empty() {
            format!("it exports no {unversioned}")
        } else {
            format!("it exports {}", super::truncate(seen.join(", "), 256))
        })
    }
}

/// A component linked for one contract version, ready to instantiate.
pub enum Pre {
    V0_2(InstancePre<AdapterState>, v0_2::AdapterPluginIndices),
    V0_1(InstancePre<AdapterState>, v0_1::AdapterPluginIndices),
}

/// The component's adapter export has the contract's name but not its types (wasmtime
/// checks them when an instance's exports are first looked up).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Mismatch(String);

impl Pre {
    /// Find the exports `contract` names in the linked component.
    pub fn new(contract: Contract, pre: InstancePre<AdapterState>) -> Result<Pre> {
        Ok(match contract {
            Contract::V0_2 => {
                let indices = v0_2::AdapterPluginIndices::new(&pre)?;
                Pre::V0_2(pre, indices)
            }
            Contract::V0_1 => {
                let indices = v0_1::AdapterPluginIndices::new(&pre)?;
                Pre::V0_1(pre, indices)
            }
        })
    }

    pub fn contract(&self) -> Contract {
        match self {
            Pre::V0_2(..) => Contract::V0_2,
            Pre::V0_1(..) => Contract::V0_1,
        }
    }

    /// A new instance; a [`Mismatch`] if the exports do not have the contract's types.
    pub async fn instantiate_async(&self, store: &mut Store<AdapterState>) -> wasmtime::Result<Instance> {
        let mismatch = |e: wasmtime::Error| wasmtime::Error::new(Mismatch(e.root_cause().to_string()));
        Ok(match self {
            Pre::V0_2(pre, indices) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                Instance::V0_2(indices.load(store, &instance).map_err(mismatch)?)
            }
            Pre::V0_1(pre, indices) => {
                let instance = pre.instantiate_async(&mut *store).await?;
                Instance::V0_1(indices.load(store, &instance).map_err(mismatch)?)
            }
        })
    }
}

/// An instantiated adapter of either version, called in host model types.
pub enum Instance {
    V0_2(v0_2::AdapterPlugin),
    V0_1(v0_1::AdapterPlugin),
}

/// What a guest call returns: a trap or limit (outer), or the adapter's answer.
pub type Answer<T> = wasmtime::Result<Result<T, AdapterError>>;

impl Instance {
    pub async fn info(&self, store: &mut Store<AdapterState>) -> wasmtime::Result<AdapterInfo> {
        Ok(match self {
            Instance::V0_2(i) => i.relay_adapter_adapter().call_info(store).await?.into(),
            Instance::V0_1(i) => i.relay_adapter_adapter().call_info(store).await?.into(),
        })
    }

    pub async fn transform_request(
        &self,
        store: &mut Store<AdapterState>,
        ctx: &CallContext,
        body: &str,
    ) -> Answer<UpstreamRequest> {
        Ok(match self {
            Instance::V0_2(i) => {
                let ctx = ctx.into();
                i.relay_adapter_adapter()
                    .call_transform_request(store, &ctx, body)
                    .await?
                    .map(Into::into)
                    .map_err(Into::into)
            }
            Instance::V0_1(i) => {
                let ctx = match v0_1::context(ctx) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                i.relay_adapter_adapter()
                    .call_transform_request(store, &ctx, body)
                    .await?
                    .map(Into::into)
                    .map_err(Into::into)
            }
        })
    }

    pub async fn transform_response(
        &self,
        store: &mut Store<AdapterState>,
        ctx: &CallContext,
        response: &UpstreamResponse,
    ) -> Answer<RelayResponse> {
        Ok(match self {
            Instance::V0_2(i) => {
                let (ctx, response) = (ctx.into(), response.into());
                let adapter = i.relay_adapter_adapter();
                adapter.call_transform_response(store, &ctx, &response).await?.map(Into::into).map_err(Into::into)
            }
            Instance::V0_1(i) => {
                let ctx = match v0_1::context(ctx) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                let response = response.into();
                let adapter = i.relay_adapter_adapter();
                adapter.call_transform_response(store, &ctx, &response).await?.map(Into::into).map_err(Into::into)
            }
        })
    }

    /// A new stream transformer: its resource in this instance.
    pub async fn stream_open(&self, store: &mut Store<AdapterState>, ctx: &CallContext) -> Answer<ResourceAny> {
        Ok(match self {
            Instance::V0_2(i) => {
                let ctx = ctx.into();
                Ok(i.relay_adapter_adapter().stream_transformer().call_constructor(store, &ctx).await?)
            }
            Instance::V0_1(i) => {
                let ctx = match v0_1::context(ctx) {
                    Ok(c) => c,
                    Err(e) => return Ok(Err(e)),
                };
                Ok(i.relay_adapter_adapter().stream_transformer().call_constructor(store, &ctx).await?)
            }
        })
    }

    /// The upstream events of one read, in one call (0.2) or one call each until the
    /// terminal one (0.1, its outputs merged: the host sees one answer either way).
    pub async fn stream_push(
        &self,
        store: &mut Store<AdapterState>,
        resource: ResourceAny,
        events: Vec<StreamEvent>,
    ) -> Answer<StreamOutput> {
        match self {
            Instance::V0_2(i) => {
                let events: Vec<_> = events.into_iter().map(Into::into).collect();
                let r = i.relay_adapter_adapter().stream_transformer().call_push(store, resource, &events).await?;
                Ok(r.map(Into::into).map_err(Into::into))
            }
            Instance::V0_1(i) => {
                let transformer = i.relay_adapter_adapter().stream_transformer();
                let mut merged = StreamOutput::default();
                for event in events {
                    let event = event.into();
                    let out: StreamOutput = match transformer.call_push(&mut *store, resource, &event).await? {
                        Ok(o) => o.into(),
                        Err(e) => return Ok(Err(e.into())),
                    };
                    merged.events.extend(out.events);
                    merged.usage = out.usage.or(merged.usage);
                    if out.done {
                        merged.done = true;
                        break;
                    }
                }
                Ok(Ok(merged))
            }
        }
    }

    pub async fn stream_finish(&self, store: &mut Store<AdapterState>, resource: ResourceAny) -> Answer<StreamEnd> {
        Ok(match self {
            Instance::V0_2(i) => {
                let r = i.relay_adapter_adapter().stream_transformer().call_finish(store, resource).await?;
                r.map(Into::into).map_err(Into::into)
            }
            Instance::V0_1(i) => {
                let r = i.relay_adapter_adapter().stream_transformer().call_finish(store, resource).await?;
                r.map(Into::into).map_err(Into::into)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_wit() {
        assert_eq!(Contract::V0_2.package(), "relay:adapter@0.2.0");
        assert_eq!(Contract::V0_1.version(), "0.1.0");
        assert_eq!(Contract::V0_1.export(), "relay:adapter/adapter@0.1.0");
        assert_eq!(Contract::exports(), "relay:adapter/adapter@0.2.0 or relay:adapter/adapter@0.1.0");
    }
}
