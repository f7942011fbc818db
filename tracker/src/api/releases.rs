//! Releases: publishers register signed manifests; the tracker checks the
//! signature and key authorisation and numbers releases per channel.

use super::{ApiError, ApiResult, PathArgs, St};
use crate::model::{ReleaseRecord, Role};
use axum::Json;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use shoal_api::{ReleaseView, Rollback, SetBudget};
use shoal_manifest::SignedManifest;
use shoal_token::Release;
use shoal_types::Hash;

/// A release record as the API shows it, with where its manifest is.
pub fn release_view(record: ReleaseRecord) -> ReleaseView {
    ReleaseView {
        manifest_url: manifest_url(&record.id),
        record,
    }
}

/// Bytes of `manifest`'s chunks (its hash `hash`) that the channel's
/// newest release lacks (`None` for a first release, when its manifest
/// cannot be read, or when it is this manifest: a retried publish, which
/// answers the existing release).
async fn patch_bytes(
    state: &crate::State,
    manifest: &shoal_manifest::Manifest,
    hash: &Hash,
) -> ApiResult<Option<u64>> {
    let Some(previous) = state
        .db
        .latest_release(&manifest.product, &manifest.channel)
        .await?
        .filter(|p| p.manifest_hash != *hash)
    else {
        return Ok(None);
    };
    let Some(old) = state
        .db
        .manifest(&previous.manifest_hash)
        .await?
        .and_then(|bytes| SignedManifest::from_bytes(&bytes).ok())
        .and_then(|signed| signed.open().ok())
    else {
        return Ok(None);
    };
    Ok(Some(shoal_manifest::diff(&old, manifest).fetch_bytes))
}

pub fn manifest_url(id: &Hash) -> String {
    format!("/v1/releases/{id}/manifest")
}

/// What a new release of (product, channel) points at.
struct NewRelease<'a> {
    product: &'a str,
    channel: &'a str,
    manifest_hash: Hash,
    total_size: u64,
    publisher: shoal_types::PublicKey,
    label: String,
    origin_budget: shoal_api::OriginBudget,
    /// See [`ReleaseRecord::patch_bytes`].
    patch_bytes: Option<u64>,
    /// See [`ReleaseRecord::key_check`].
    key_check: Option<Hash>,
    /// A rollback to an encrypted release keeps its key and unlock time.
    key_stored: bool,
    unlock_at: Option<u64>,
}

/// The next version of (product, channel) pointing at `manifest_hash`,
/// numbered atomically: two replicas registering at once get two versions.
/// `reuse` answers an existing release instead (a retried publish), read
/// again on every attempt.
async fn add_release(
    state: &crate::State,
    new: NewRelease<'_>,
    reuse: impl Fn(&ReleaseRecord) -> bool,
) -> ApiResult<(ReleaseRecord, bool)> {
    let NewRelease {
        product,
        channel,
        manifest_hash,
        total_size,
        publisher,
        label,
        origin_budget,
        patch_bytes,
        key_check,
        key_stored,
        unlock_at,
    } = new;
    for _ in 0..crate::store::TXN_ATTEMPTS {
        if let Some(latest) = state
            .db
            .latest_release(product, channel)
            .await?
            .filter(|r| reuse(r))
        {
            return Ok((latest, false));
        }
        let mut txn = state.db.txn();
        let version = txn.next_version(product, channel).await?;
        let now = state.now();
        let meta = Release {
            product: product.to_owned(),
            channel: channel.to_owned(),
            version,
            manifest_hash,
            total_size,
            publisher,
            published_at: now,
            expires_at: 0,
        };
        let record = ReleaseRecord {
            id: meta.id(),
            product: meta.product,
            channel: meta.channel,
            version,
            manifest_hash,
            total_size,
            publisher,
            label: label.clone(),
            published_at: now,
            origin_budget,
            patch_bytes,
            key_check,
            key_stored,
            unlock_at,
        };
        txn.put_release(&record);
        if txn.commit().await? {
            return Ok((record, true));
        }
    }
    Err(ApiError::contended())
}

/// `POST /v1/releases?origin_budget=…` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// Copies of the payload the seeds may send to the swarm in total
    /// (`1.05`, `2`, `unlimited`); if absent, the channel's default, else
    /// the tracker's `origin_budget`.
    #[param(value_type = Option<String>, pattern = "^(unlimited|[0-9]+(\\.[0-9]+)?)$")]
    origin_budget: Option<String>,
}

/// `POST /v1/releases`: the body is a `manifest.shoal` file.
#[utoipa::path(
    post,
    path = "/v1/releases",
    tag = "releases",
    params(RegisterQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A publisher-signed manifest (`manifest.shoal`)"),
    responses((status = 201, description = "Registered", body = ReleaseView), (status = 200, description = "The channel's newest release already has this manifest", body = ReleaseView), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn register(
    axum::extract::State(state): St,
    caller: super::Caller,
    super::QueryArgs(query): super::QueryArgs<RegisterQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require(&[Role::Publisher])?;
    let asked = match &query.origin_budget {
        Some(b) => Some(
            shoal_api::OriginBudget::parse(b)
                .map_err(|e| ApiError::bad_request("invalid_field", e))?,
        ),
        None => None,
    };
    let invalid =
        |e: shoal_manifest::ManifestError| ApiError::new(422, "invalid_manifest", e.to_string());
    let signed = SignedManifest::from_bytes(&body).map_err(invalid)?;
    let manifest = signed.open().map_err(|e| match e {
        shoal_manifest::ManifestError::Signature(_) => {
            ApiError::new(403, "bad_signature", e.to_string())
        }
        other => invalid(other),
    })?;
    let product = caller.product_to_publish(&state, &manifest.product).await?;
    let Some(channel) = product.channel(&manifest.channel) else {
        return Err(ApiError::not_found(format!(
            "{} has no channel {}",
            product.id, manifest.channel
        )));
    };
    // The publisher's choice, else the channel's default, else the tracker's.
    let origin_budget = asked
        .or(channel.origin_budget)
        .unwrap_or(state.config.origin_budget);
    if !product.publisher_keys.contains(&signed.publisher()) {
        return Err(ApiError::new(
            403,
            "key_not_authorised",
            format!("key {} may not publish {}", signed.publisher(), product.id),
        ));
    }
    let hash = signed.hash();
    let patch_bytes = patch_bytes(&state, &manifest, &hash).await?;
    // Content-addressed: written before any release points at it.
    state.db.put_manifest(&hash, &body).await?;
    // Registering the channel's newest manifest again (a retried publish)
    // answers the existing release instead of numbering a duplicate.
    let (record, fresh) = add_release(
        &state,
        NewRelease {
            product: &manifest.product,
            channel: &manifest.channel,
            manifest_hash: hash,
            total_size: manifest.unique_size(),
            publisher: signed.publisher(),
            label: manifest.version.clone(),
            origin_budget,
            patch_bytes,
            key_check: manifest.sealing.as_ref().map(|s| s.key_check),
            // The key table is by manifest: registering a manifest again
            // finds a key uploaded for it before.
            key_stored: manifest.is_sealed() && state.db.content_key(&hash).await?.is_some(),
            unlock_at: None,
        },
        |latest| latest.manifest_hash == hash,
    )
    .await?;
    if !fresh {
        return Ok((axum::http::StatusCode::OK, Json(release_view(record))).into_response());
    }
    tracing::info!(product = %record.product, channel = %record.channel, version = record.version, id = %record.id, "release registered");
    Ok((axum::http::StatusCode::CREATED, Json(release_view(record))).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/products/{id}/channels/{channel}/releases",
    tag = "releases",
    params(("id" = String, Path), ("channel" = String, Path)),
    responses((status = 200, body = Vec<ReleaseView>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn list(
    axum::extract::State(state): St,
    caller: super::Caller,
    PathArgs((product, channel)): PathArgs<(String, String)>,
) -> ApiResult<Json<Vec<ReleaseView>>> {
    caller.product_to_publish(&state, &product).await?;
    Ok(Json(
        state
            .db
            .releases(&product, &channel, 1000)
            .await?
            .into_iter()
            .map(release_view)
            .collect(),
    ))
}

/// An operator changes a release's origin budget (a launch that needs
/// more speed, or a patch that should cost less). Seeds hear their new
/// share with their next heartbeat.
#[utoipa::path(
    put,
    path = "/v1/releases/{id}/budget",
    tag = "releases",
    params(("id" = String, Path, description = "The release id (64 hex digits)")),
    request_body = SetBudget,
    responses((status = 200, description = "The release with its new budget", body = ReleaseView), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn set_budget(
    axum::extract::State(state): St,
    _: super::Operator,
    PathArgs(id): PathArgs<String>,
    super::Body(req): super::Body<SetBudget>,
) -> ApiResult<Json<ReleaseView>> {
    let id = release_id(&id)?;
    let mut before = req.origin_budget;
    let record = update_release(&state, &id, |r| {
        before = r.origin_budget;
        r.origin_budget = req.origin_budget;
        Ok(())
    })
    .await?;
    tracing::info!(release = %id, %before, after = %record.origin_budget, "origin budget changed");
    Ok(Json(release_view(record)))
}

/// A release id from a path: 64 hex digits.
fn release_id(id: &str) -> ApiResult<Hash> {
    id.parse()
        .map_err(|_| ApiError::bad_request("bad_path", "a release id is 64 hex digits"))
}

/// Rolling back is a new, higher release pointing at an older manifest, so
/// clients' rollback protection never has to accept a lower version.
#[utoipa::path(
    post,
    path = "/v1/products/{id}/channels/{channel}/rollback",
    tag = "releases",
    params(("id" = String, Path), ("channel" = String, Path)),
    request_body = Rollback,
    responses((status = 201, body = ReleaseView), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn rollback(
    axum::extract::State(state): St,
    caller: super::Caller,
    PathArgs((product, channel)): PathArgs<(String, String)>,
    super::Body(req): super::Body<Rollback>,
) -> ApiResult<Response> {
    caller.product_to_publish(&state, &product).await?;
    let target = state
        .db
        .releases(&product, &channel, usize::MAX)
        .await?
        .into_iter()
        .find(|r| r.version == req.version)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{product}/{channel} has no version {}",
                req.version
            ))
        })?;
    let (record, _) = add_release(
        &state,
        NewRelease {
            product: &product,
            channel: &channel,
            manifest_hash: target.manifest_hash,
            total_size: target.total_size,
            publisher: target.publisher,
            label: target.label,
            origin_budget: target.origin_budget,
            patch_bytes: None,
            key_check: target.key_check,
            key_stored: target.key_stored,
            unlock_at: target.unlock_at,
        },
        |_| false,
    )
    .await?;
    Ok((axum::http::StatusCode::CREATED, Json(release_view(record))).into_response())
}

/// `GET /v1/releases/{id}/manifest`: the publisher-signed manifest bytes,
/// which name every file of the build. Seeds and operators may read any;
/// publishers those of their products; players only those a token request
/// would grant them (the same policy decision, unaudited: no token issued).
#[utoipa::path(
    get,
    path = "/v1/releases/{id}/manifest",
    tag = "releases",
    params(("id" = String, Path)),
    responses((status = 200, description = "The publisher-signed manifest bytes", content_type = "application/octet-stream", body = Vec<u8>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn manifest(
    axum::extract::State(state): St,
    caller: super::Caller,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Response> {
    let id: Hash = id
        .parse()
        .map_err(|e| ApiError::bad_request("bad_path", format!("release id: {e}")))?;
    let missing = || ApiError::not_found(format!("no release {id}"));
    let record = state.db.release(&id).await?.ok_or_else(missing)?;
    match caller.key.role {
        Role::Operator | Role::Seed => {}
        Role::Publisher => {
            caller
                .product_to_publish(&state, &record.product)
                .await
                .map_err(|_| missing())?;
        }
        Role::Player => {
            super::swarm::entitled(&state, &caller, &record).await?;
        }
    }
    let bytes = state
        .db
        .manifest(&record.manifest_hash)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("manifest {} is missing", record.manifest_hash))
        })?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        bytes,
    )
        .into_response())
}

/// The release `id` names (64 hex digits), for a caller who publishes its
/// product; an encrypted one, or a 409 saying it is not.
async fn sealed_release(
    state: &crate::State,
    caller: &super::Caller,
    id: &str,
) -> ApiResult<ReleaseRecord> {
    caller.require(&[Role::Operator, Role::Publisher])?;
    let id = release_id(id)?;
    let record = state
        .db
        .release(&id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no release {id}")))?;
    // Someone who does not publish the product learns nothing of it.
    if caller
        .product_to_publish(state, &record.product)
        .await
        .is_err()
    {
        return Err(ApiError::not_found(format!("no release {id}")));
    }
    if record.key_check.is_none() {
        return Err(ApiError::conflict(
            "not_encrypted",
            format!("release {id} is not encrypted: it has no key and no unlock"),
        ));
    }
    Ok(record)
}

/// Writes `change` into the release `id` atomically.
async fn update_release(
    state: &crate::State,
    id: &Hash,
    mut change: impl FnMut(&mut ReleaseRecord) -> ApiResult<()>,
) -> ApiResult<ReleaseRecord> {
    for _ in 0..crate::store::TXN_ATTEMPTS {
        let mut txn = state.db.txn();
        let mut record = txn
            .release(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no release {id}")))?;
        change(&mut record)?;
        txn.put_release(&record);
        if txn.commit().await? {
            return Ok(record);
        }
    }
    Err(ApiError::contended())
}

/// Refuses moving an unlock that has happened: its key is out.
fn check_unlock_move(record: &ReleaseRecord, to: Option<u64>, now: u64) -> ApiResult<()> {
    if let Some(t) = record.unlock_at
        && t <= now
        && record.key_stored
        && to.is_some_and(|to| to != t)
    {
        return Err(ApiError::conflict(
            "already_unlocked",
            format!(
                "release {} unlocked at {t}: its key has been handed out and cannot be taken back",
                record.id
            ),
        ));
    }
    Ok(())
}

/// The publisher uploads an encrypted release's content key (checked
/// against the manifest's `key_check`), optionally with its unlock time.
#[utoipa::path(
    put,
    path = "/v1/releases/{id}/key",
    tag = "releases",
    params(("id" = String, Path, description = "The release id (64 hex digits)")),
    request_body = shoal_api::SetContentKey,
    responses((status = 200, description = "The release, its key stored", body = ReleaseView), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn set_key(
    axum::extract::State(state): St,
    caller: super::Caller,
    PathArgs(id): PathArgs<String>,
    super::Body(req): super::Body<shoal_api::SetContentKey>,
) -> ApiResult<Json<ReleaseView>> {
    let record = sealed_release(&state, &caller, &id).await?;
    let key = shoal_manifest::seal::ContentKey::from_hex(&req.content_key).ok_or_else(|| {
        ApiError::bad_request("invalid_field", "content_key must be 64 hex digits")
    })?;
    if Some(key.check()) != record.key_check {
        return Err(ApiError::new(
            422,
            "wrong_key",
            format!(
                "this key is not the one release {} was encrypted with (its check does not match the manifest's)",
                record.id
            ),
        ));
    }
    let now = state.now();
    check_unlock_move(&record, req.unlock_at, now)?;
    // The key first: a record never says a key is stored that is not.
    crate::content_keys::store(&state, &record.manifest_hash, &key).await?;
    let record = update_release(&state, &record.id, |r| {
        check_unlock_move(r, req.unlock_at, now)?;
        r.key_stored = true;
        if req.unlock_at.is_some() {
            r.unlock_at = req.unlock_at;
        }
        Ok(())
    })
    .await?;
    tracing::info!(release = %record.id, unlock_at = ?record.unlock_at, "content key stored");
    Ok(Json(release_view(record)))
}

/// Schedules an encrypted release's unlock (or unlocks it now).
#[utoipa::path(
    put,
    path = "/v1/releases/{id}/unlock",
    tag = "releases",
    params(("id" = String, Path, description = "The release id (64 hex digits)")),
    request_body = shoal_api::SetUnlock,
    responses((status = 200, description = "The release with its unlock time", body = ReleaseView), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn set_unlock(
    axum::extract::State(state): St,
    caller: super::Caller,
    PathArgs(id): PathArgs<String>,
    super::Body(req): super::Body<shoal_api::SetUnlock>,
) -> ApiResult<Json<ReleaseView>> {
    let record = sealed_release(&state, &caller, &id).await?;
    let now = state.now();
    let at = req.at.unwrap_or(now);
    let record = update_release(&state, &record.id, |r| {
        if !r.key_stored {
            return Err(ApiError::conflict(
                "no_key",
                format!(
                    "release {} has no content key yet: upload it first (shoal admin releases key)",
                    r.id
                ),
            ));
        }
        check_unlock_move(r, Some(at), now)?;
        r.unlock_at = Some(at);
        Ok(())
    })
    .await?;
    tracing::info!(release = %record.id, unlock_at = at, "unlock scheduled");
    Ok(Json(release_view(record)))
}
