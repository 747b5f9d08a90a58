//! The models API: `GET /v1/models` and `GET /v1/models/{id}`, the models a token may use.

use http::{HeaderMap, Response, StatusCode};

use crate::auth::authenticate;
use crate::error::RelayError;
use crate::http::{Body, error_response, json_response};
use crate::service::Relay;

impl Relay {
    /// `GET /v1/models`: the models this token may use.
    pub fn models(&self, headers: &HeaderMap) -> Response<Body> {
        let snap = self.snapshot();
        let token = match authenticate(headers, &snap) {
            Ok(t) => t,
            Err(e) => return error_response(&e, None),
        };
        let data: Vec<_> = snap
            .models_for(token)
            .into_iter()
            .map(|(id, owner)| serde_json::json!({"id": id, "object": "model", "created": self.started, "owned_by": owner}))
            .collect();
        json_response(StatusCode::OK, serde_json::json!({"object": "list", "data": data}).to_string())
    }

    /// `GET /v1/models/{id}`.
    pub fn model(&self, headers: &HeaderMap, id: &str) -> Response<Body> {
        let snap = self.snapshot();
        let token = match authenticate(headers, &snap) {
            Ok(t) => t,
            Err(e) => return error_response(&e, None),
        };
        match snap.models_for(token).into_iter().find(|(m, _)| *m == id) {
            Some((id, owner)) => json_response(
                StatusCode::OK,
                serde_json::json!({"id": id, "object": "model", "created": self.started, "owned_by": owner})
                    .to_string(),
            ),
            None => error_response(&RelayError::model_not_found(id), None),
        }
    }
}
