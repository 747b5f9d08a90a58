//! Azure OpenAI's deployments API, as the vendor speaks it. (To be written.)

use http::{Response, StatusCode};

use crate::{Body, Req, json_response};

pub(crate) async fn handle(_req: &Req<'_>) -> Response<Body> {
    json_response(StatusCode::NOT_IMPLEMENTED, r#"{"error":"not implemented"}"#.into())
}
