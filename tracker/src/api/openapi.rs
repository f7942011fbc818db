//! The OpenAPI 3.1 document of the `/v1/` API, generated from the handlers'
//! `#[utoipa::path]` attributes and the same serde types they decode and
//! encode (`shoal-api`, the model, the admin requests), served at
//! `GET /v1/openapi.json`. `tests/openapi.rs` checks that every route the
//! router has is in it; CI runs schemathesis against it.

use super::{admin, releases, swarm};
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shoal tracker",
        description = "Accounts, products, channels, entitlements, releases, swarm tokens, \
                       announces, seed heartbeats and the operators' views. Every refusal is \
                       a 4xx with the JSON error body; send API keys as \
                       `Authorization: Bearer <key>`."
    ),
    paths(
        health,
        openapi_json,
        admin::create_account,
        admin::list_accounts,
        admin::get_account,
        admin::add_member,
        admin::remove_member,
        admin::create_api_key,
        admin::list_api_keys,
        admin::revoke_api_key,
        admin::create_product,
        admin::list_products,
        admin::get_product,
        admin::add_channel,
        admin::set_allow_list,
        admin::add_publisher_key,
        admin::remove_publisher_key,
        admin::add_publisher,
        admin::remove_publisher,
        admin::grant,
        admin::list_entitlements,
        admin::revoke_entitlement,
        admin::audit,
        admin::audit_export,
        releases::register,
        releases::list,
        releases::rollback,
        releases::manifest,
        releases::set_budget,
        releases::set_key,
        releases::set_unlock,
        swarm::token,
        swarm::announce,
        swarm::heartbeat,
        swarm::ops_swarms,
        swarm::ops_seeds,
        swarm::ops_overview,
    ),
    components(schemas(shoal_api::ErrorBody, shoal_api::PeerInfo, shoal_api::SwarmStats)),
    modifiers(&BearerKey),
)]
pub struct Doc;

/// The `api_key` security scheme: a bearer API key.
struct BearerKey;

impl utoipa::Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API key: `key_…` as `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
    }
}

/// The refusals every operation may answer, each with the JSON error body:
/// a 4xx for anything the caller controls, a 503 when storage fails.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum Refusals {
    /// Refused: the JSON error body
    #[response(status = "4XX")]
    Refused(shoal_api::ErrorBody),
    /// The tracker's storage failed
    #[response(status = "5XX")]
    Failed(shoal_api::ErrorBody),
}

/// What `GET /v1/health` answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, or `degraded` when the database cannot be reached (the answer
    /// is then a 503, so a load balancer takes this replica out).
    pub status: &'static str,
    /// The tracker's signing key, which players and seeds pin.
    pub public_key: shoal_types::PublicKey,
    /// `sled` or `postgres`.
    pub storage: &'static str,
    /// Whether the storage answered just now.
    pub storage_reachable: bool,
    /// Why it did not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_error: Option<String>,
}

/// Liveness, whether the database is reachable, and the key to pin.
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "meta",
    responses(
        (status = 200, body = Health),
        (status = 503, description = "The database cannot be reached", body = Health)
    )
)]
pub async fn health(axum::extract::State(state): super::St) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let store = state.db.store();
    let ping = store.ping().await;
    let reachable = ping.is_ok();
    let body = Health {
        status: if reachable { "ok" } else { "degraded" },
        public_key: state.key.public(),
        storage: store.backend(),
        storage_reachable: reachable,
        storage_error: ping.err().map(|e| e.to_string()),
    };
    let status = if reachable {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(Doc::openapi())
}
