//! The admin API: `GET /admin/plugins`, the adapters in service, behind the admin token.

use http::{HeaderMap, Response, StatusCode, header};

use crate::error::RelayError;
use crate::http::{Body, constant_time_eq, error_response, json_response};
use crate::model::StreamFormat;
use crate::service::Relay;

impl Relay {
    /// `GET /admin/plugins`: the adapters in service, behind the admin token.
    pub fn admin_plugins(&self, headers: &HeaderMap) -> Response<Body> {
        let snap = self.snapshot();
        let Some(admin) = &snap.config.admin_token else {
            return error_response(&RelayError::not_found("the admin API is off (no admin_token configured)"), None);
        };
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(sent.as_bytes(), admin.expose().as_bytes()) {
            return error_response(&RelayError::unauthorized("the admin API needs the admin token"), None);
        }
        let data: Vec<_> = self
            .registry
            .all()
            .iter()
            .map(|p| {
                let loaded = p.loaded_at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                serde_json::json!({
                    "name": p.info.name,
                    "version": p.info.version,
                    "description": p.info.description,
                    "file": p.path.display().to_string(),
                    "sha256": p.sha256,
                    "loaded_at": loaded,
                    "contract": p.contract().version(),
                    "endpoints": p.info.endpoints.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                    "native": p.info.native.iter().map(|e| e.as_str()).collect::<Vec<_>>(),
                    "stream_format": match p.info.stream_format { StreamFormat::Sse => "sse", StreamFormat::Ndjson => "ndjson" },
                    "channels": snap.config.channels.iter().filter(|c| c.adapter == p.info.name).map(|c| c.name.clone()).collect::<Vec<_>>(),
                })
            })
            .collect();
        json_response(StatusCode::OK, serde_json::json!({"object": "list", "data": data}).to_string())
    }
}
