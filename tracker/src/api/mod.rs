//! The HTTP/JSON API under `/v1/`: routing, authentication, JSON errors.
//!
//! Every error is `{"error": CODE, "detail": TEXT}` with a 4xx status for the
//! caller's mistakes. Bodies are size-limited; extractor failures (bad JSON,
//! wrong types, wrong content type, oversized bodies) become JSON errors too.

mod admin;
mod openapi;
mod releases;
mod swarm;

use crate::model::{Account, ApiKey, Product, Role};
use crate::{State, keys, store::StoreError};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Largest JSON body accepted.
pub const MAX_JSON_BODY: usize = 64 << 10;

/// An API error: status, stable code, human detail.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
            code,
            detail: detail.into(),
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(400, code, detail)
    }
    pub fn not_found(what: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", what)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
        ApiError::new(409, code, detail)
    }
    /// A read-modify-write that lost to other writers of the same record
    /// [`crate::store::TXN_ATTEMPTS`] times in a row.
    pub fn contended() -> ApiError {
        ApiError::new(
            503,
            "contended",
            "the record changed under this request too often; try again",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = shoal_api::ErrorBody {
            error: self.code.into(),
            detail: self.detail,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        tracing::error!(error = %e, "storage failure");
        ApiError::new(
            503,
            "storage_unavailable",
            "the tracker's storage failed; try again",
        )
    }
}

impl From<getrandom::Error> for ApiError {
    fn from(e: getrandom::Error) -> ApiError {
        tracing::error!(error = %e, "random source failure");
        ApiError::new(
            503,
            "unavailable",
            "the tracker could not generate a key; try again",
        )
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose rejections are JSON errors.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::new(422, "invalid_body", e.body_text()),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("bad_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            415,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        JsonRejection::BytesRejection(e) => {
            ApiError::new(e.status().as_u16(), "body_too_large", e.body_text())
        }
        other => ApiError::new(other.status().as_u16(), "bad_request", other.body_text()),
    }
}

/// A path whose rejections are JSON errors.
#[derive(Debug)]
pub struct PathArgs<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathArgs(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("bad_path", e.body_text()))
    }
}

/// A query string whose rejections are JSON errors.
#[derive(Debug)]
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryArgs(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("bad_query", e.body_text()))
    }
}

/// Where a request came from: the far end of its TCP connection (behind a
/// NAT, the router's public address) when the server knows it, and the last
/// address in `X-Forwarded-For`, which only a trusted proxy's is worth
/// anything (see `Config::trust_forwarded_for`).
#[derive(Debug, Clone, Copy)]
pub struct Remote {
    pub peer: Option<std::net::IpAddr>,
    pub forwarded: Option<std::net::IpAddr>,
}

impl Remote {
    /// The address that names a client's site, if it names one: loopback
    /// and unspecified addresses (a proxy or a test on the same host) do not.
    pub fn site(&self, trust_forwarded_for: bool) -> Option<std::net::IpAddr> {
        let ip = if trust_forwarded_for {
            self.forwarded
        } else {
            self.peer
        }?;
        (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Remote {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| v.trim().parse().ok());
        Ok(Remote { peer, forwarded })
    }
}

/// The caller, authenticated by `Authorization: Bearer <api key>`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKey,
    pub account: Account,
}

impl Caller {
    /// Refuses callers whose key has none of `roles`.
    pub fn require(&self, roles: &[Role]) -> ApiResult<()> {
        if roles.contains(&self.key.role) {
            Ok(())
        } else {
            let names: Vec<String> = roles
                .iter()
                .map(|r| format!("{r:?}").to_lowercase())
                .collect();
            Err(ApiError::new(
                403,
                "wrong_role",
                format!("this needs a {} API key", names.join(" or ")),
            ))
        }
    }
}

impl Caller {
    /// Whether the caller may act on `product` as its publisher: operators
    /// always, publisher keys only for products their account publishes.
    pub fn publishes(&self, product: &Product) -> bool {
        match self.key.role {
            Role::Operator => true,
            Role::Publisher => product.publishers.contains(&self.account.id),
            Role::Player | Role::Seed => false,
        }
    }

    /// Loads product `id` for an operator or one of its publishers. Anyone
    /// else hears the same 404 as for a product that does not exist, so the
    /// answer tells nothing about other publishers' products.
    pub async fn product_to_publish(&self, state: &State, id: &str) -> ApiResult<Product> {
        self.require(&[Role::Operator, Role::Publisher])?;
        state
            .db
            .product(id)
            .await?
            .filter(|p| self.publishes(p))
            .ok_or_else(|| not_yours(id))
    }
}

/// The answer for a product the caller does not publish (or that is absent).
pub fn not_yours(id: &str) -> ApiError {
    ApiError::not_found(format!("no product {id} that this key's account publishes"))
}

impl FromRequestParts<Arc<State>> for Caller {
    type Rejection = ApiError;

    /// Runs before the body is read, so an unauthenticated request is a 401
    /// whatever its body.
    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<State>,
    ) -> Result<Self, Self::Rejection> {
        authenticate(state, &parts.headers).await
    }
}

/// An operator: a [`Caller`] whose key has the operator role. As an
/// extractor it answers 401 or 403 before the body is read, so an operator
/// handler starts with what it does rather than with the check.
#[derive(Debug, Clone)]
pub struct Operator(pub Caller);

impl FromRequestParts<Arc<State>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<State>,
    ) -> Result<Self, Self::Rejection> {
        let caller = authenticate(state, &parts.headers).await?;
        caller.require(&[Role::Operator])?;
        Ok(Operator(caller))
    }
}

pub async fn authenticate(state: &State, headers: &HeaderMap) -> ApiResult<Caller> {
    let unauthorized = |detail: &str| ApiError::new(401, "unauthorized", detail);
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("send an API key as `Authorization: Bearer <key>`"))?;
    let text = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (id, secret) = keys::parse(text).ok_or_else(|| unauthorized("malformed API key"))?;
    let key = state
        .db
        .api_key(id)
        .await?
        .ok_or_else(|| unauthorized("unknown API key"))?;
    if !keys::matches(&key, secret) {
        return Err(unauthorized("unknown API key"));
    }
    if key.revoked_at.is_some() {
        return Err(unauthorized("this API key was revoked"));
    }
    let account = state
        .db
        .account(&key.account)
        .await?
        .ok_or_else(|| unauthorized("the key's account no longer exists"))?;
    Ok(Caller { key, account })
}

type St = axum::extract::State<Arc<State>>;

/// `GET /metrics`: Prometheus text format. Series that name products,
/// channels, releases or seeds go only to an operator API key or the
/// configured `metrics_token` (or to anyone with `metrics_public_detail`);
/// everyone else sees totals.
async fn metrics(
    axum::extract::State(state): St,
    headers: HeaderMap,
) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse as _;
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "));
    let token = &state.config.metrics_token;
    let detail = match bearer {
        _ if state.config.metrics_public_detail => true,
        None => false,
        Some(b) if !token.is_empty() && keys::same_secret(b, token) => true,
        Some(_) => authenticate(&state, &headers)
            .await
            .is_ok_and(|c| c.key.role == Role::Operator),
    };
    let body = crate::metrics::render(&state, detail).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response())
}

/// `GET /`: the operators' dashboard (it signs in with an API key and polls
/// `/v1/ops/overview`).
async fn dashboard() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("../dashboard.html"))
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the API lives under /v1/")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        405,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// The whole API.
pub fn router(state: Arc<State>) -> Router {
    let releases_upload = Router::new()
        .route("/v1/releases", post(releases::register))
        .layer(DefaultBodyLimit::max(
            shoal_manifest::MAX_MANIFEST_BYTES + 1024,
        ));
    Router::new()
        .route("/v1/health", get(openapi::health))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        .route(
            "/v1/accounts",
            post(admin::create_account).get(admin::list_accounts),
        )
        .route("/v1/accounts/{id}", get(admin::get_account))
        .route("/v1/accounts/{id}/members", post(admin::add_member))
        .route(
            "/v1/accounts/{id}/members/{member}",
            delete(admin::remove_member),
        )
        .route(
            "/v1/api-keys",
            post(admin::create_api_key).get(admin::list_api_keys),
        )
        .route("/v1/api-keys/{id}", delete(admin::revoke_api_key))
        .route(
            "/v1/products",
            post(admin::create_product).get(admin::list_products),
        )
        .route("/v1/products/{id}", get(admin::get_product))
        .route("/v1/products/{id}/channels", post(admin::add_channel))
        .route(
            "/v1/products/{id}/channels/{channel}/allow",
            put(admin::set_allow_list),
        )
        .route(
            "/v1/products/{id}/publisher-keys",
            post(admin::add_publisher_key),
        )
        .route("/v1/products/{id}/publishers", post(admin::add_publisher))
        .route(
            "/v1/products/{id}/publishers/{account}",
            delete(admin::remove_publisher),
        )
        .route(
            "/v1/products/{id}/publisher-keys/{key}",
            delete(admin::remove_publisher_key),
        )
        .route(
            "/v1/products/{id}/channels/{channel}/releases",
            get(releases::list),
        )
        .route(
            "/v1/products/{id}/channels/{channel}/rollback",
            post(releases::rollback),
        )
        .route("/v1/releases/{id}/manifest", get(releases::manifest))
        .route("/v1/releases/{id}/budget", put(releases::set_budget))
        .route("/v1/releases/{id}/key", put(releases::set_key))
        .route("/v1/releases/{id}/unlock", put(releases::set_unlock))
        .route(
            "/v1/entitlements",
            post(admin::grant).get(admin::list_entitlements),
        )
        .route("/v1/entitlements/{id}", delete(admin::revoke_entitlement))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/audit/export", get(admin::audit_export))
        .route("/v1/tokens", post(swarm::token))
        .route("/v1/announce", post(swarm::announce))
        .route("/v1/seeds/heartbeat", post(swarm::heartbeat))
        .route("/v1/ops/swarms", get(swarm::ops_swarms))
        .route("/v1/ops/seeds", get(swarm::ops_seeds))
        .route("/v1/ops/overview", get(swarm::ops_overview))
        .route("/metrics", get(metrics))
        .route("/", get(dashboard))
        .layer(DefaultBodyLimit::max(MAX_JSON_BODY))
        .merge(releases_upload)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}
