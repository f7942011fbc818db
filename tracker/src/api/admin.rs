//! Operator endpoints: accounts and organisation seats, API keys, products,
//! channels, publisher keys, entitlements and the audit log.

use super::{ApiError, ApiResult, Body, Operator, PathArgs, QueryArgs, St};
use crate::keys;
use crate::model::{Account, AccountKind, ApiKey, AuditEntry, Channel, Entitlement, Product, Role};
use axum::Json;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shoal_api::{
    AllowList, CreatedKey, KeyView, NewAccount, NewApiKey, NewChannel, NewEntitlement, NewMember,
    NewProduct, NewPublisher, NewPublisherKey,
};
use shoal_types::PublicKey;

fn check_name(field: &str, value: &str, max: usize) -> ApiResult<()> {
    if value.trim().is_empty() || value.len() > max || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be 1 to {max} printable characters"),
        ));
    }
    Ok(())
}

/// Product and channel ids: the one id grammar ([`shoal_types::id`]).
pub(super) fn check_id(field: &str, value: &str) -> ApiResult<()> {
    if shoal_types::id::is_valid(value) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            format!("{field} must be {}", shoal_types::id::RULE),
        ))
    }
}

fn check_country(country: &str) -> ApiResult<String> {
    if country.len() == 2 && country.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(country.to_ascii_uppercase())
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            "country must be an ISO 3166-1 alpha-2 code such as \"FR\"",
        ))
    }
}

#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    request_body = NewAccount,
    responses((status = 201, body = Account), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn create_account(
    axum::extract::State(state): St,
    _: Operator,
    Body(req): Body<NewAccount>,
) -> ApiResult<Response> {
    check_name("name", &req.name, 200)?;
    let country = check_country(&req.country)?;
    if req.kind == AccountKind::Individual && req.seats != 0 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "only organisations have seats",
        ));
    }
    let account = Account {
        id: state
            .db
            .next_id(if req.kind == AccountKind::Organisation {
                "org"
            } else {
                "acc"
            })
            .await?,
        name: req.name,
        kind: req.kind,
        country,
        seats: req.seats,
        members: vec![],
        org: None,
        created_at: state.now(),
    };
    state.db.put_account(&account).await?;
    state.db.flush().await?;
    Ok(created(account))
}

#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "accounts",
    responses((status = 200, body = Vec<Account>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn list_accounts(
    axum::extract::State(state): St,
    _: Operator,
) -> ApiResult<Json<Vec<Account>>> {
    Ok(Json(state.db.accounts(10_000).await?))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    params(("id" = String, Path)),
    responses((status = 200, body = Account), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn get_account(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Json<Account>> {
    Ok(Json(load_account(&state, &id).await?))
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/members",
    tag = "accounts",
    params(("id" = String, Path)),
    request_body = NewMember,
    responses((status = 200, body = Account), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn add_member(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs(org_id): PathArgs<String>,
    Body(req): Body<NewMember>,
) -> ApiResult<Json<Account>> {
    // Both records are expected unchanged at commit: two requests taking
    // the last seat (at one replica or two) cannot both succeed.
    for _ in 0..crate::store::TXN_ATTEMPTS {
        let mut txn = state.db.txn();
        let mut org = txn
            .account(&org_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no account {org_id}")))?;
        if org.kind != AccountKind::Organisation {
            return Err(ApiError::conflict(
                "not_an_organisation",
                format!("{org_id} is not an organisation"),
            ));
        }
        let mut member = txn
            .account(&req.account)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no account {}", req.account)))?;
        if member.kind != AccountKind::Individual {
            return Err(ApiError::conflict(
                "not_an_individual",
                "only individual accounts take seats",
            ));
        }
        if org.members.contains(&member.id) {
            return Ok(Json(org));
        }
        if let Some(other) = &member.org {
            return Err(ApiError::conflict(
                "already_member",
                format!("{} already holds a seat in {other}", member.id),
            ));
        }
        if org.members.len() >= org.seats as usize {
            return Err(ApiError::conflict(
                "no_seats_left",
                format!("{org_id} has {} seats, all assigned", org.seats),
            ));
        }
        org.members.push(member.id.clone());
        member.org = Some(org.id.clone());
        txn.put_account(&member);
        txn.put_account(&org);
        if txn.commit().await? {
            return Ok(Json(org));
        }
    }
    Err(ApiError::contended())
}

#[utoipa::path(
    delete,
    path = "/v1/accounts/{id}/members/{member}",
    tag = "accounts",
    params(("id" = String, Path), ("member" = String, Path)),
    responses((status = 200, body = Account), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn remove_member(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs((org_id, member_id)): PathArgs<(String, String)>,
) -> ApiResult<Json<Account>> {
    for _ in 0..crate::store::TXN_ATTEMPTS {
        let mut txn = state.db.txn();
        let mut org = txn
            .account(&org_id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no account {org_id}")))?;
        if !org.members.contains(&member_id) {
            return Err(ApiError::not_found(format!(
                "{member_id} holds no seat in {org_id}"
            )));
        }
        org.members.retain(|m| *m != member_id);
        if let Some(mut member) = txn.account(&member_id).await? {
            member.org = None;
            txn.put_account(&member);
        }
        txn.put_account(&org);
        if txn.commit().await? {
            return Ok(Json(org));
        }
    }
    Err(ApiError::contended())
}

impl From<&ApiKey> for KeyView {
    fn from(k: &ApiKey) -> KeyView {
        KeyView {
            id: k.id.clone(),
            account: k.account.clone(),
            role: k.role,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/api-keys",
    tag = "keys",
    request_body = NewApiKey,
    responses((status = 201, body = CreatedKey), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn create_api_key(
    axum::extract::State(state): St,
    _: Operator,
    Body(req): Body<NewApiKey>,
) -> ApiResult<Response> {
    let account = load_account(&state, &req.account).await?;
    // An organisation's entitlements reach its members through their seats;
    // a key on the organisation itself would bypass the seat count.
    if account.kind == AccountKind::Organisation {
        return Err(ApiError::conflict(
            "organisation_account",
            format!(
                "{} is an organisation: keys belong to member accounts (add one with a seat)",
                account.id
            ),
        ));
    }
    let (record, key) = keys::new_key(
        state.db.next_id("key").await?,
        &req.account,
        req.role,
        state.now(),
    )?;
    state.db.put_api_key(&record).await?;
    state.db.flush().await?;
    Ok(created(CreatedKey {
        record: (&record).into(),
        key,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/api-keys",
    tag = "keys",
    responses((status = 200, body = Vec<KeyView>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn list_api_keys(
    axum::extract::State(state): St,
    _: Operator,
) -> ApiResult<Json<Vec<KeyView>>> {
    Ok(Json(
        state
            .db
            .api_keys(100_000)
            .await?
            .iter()
            .map(KeyView::from)
            .collect(),
    ))
}

#[utoipa::path(
    delete,
    path = "/v1/api-keys/{id}",
    tag = "keys",
    params(("id" = String, Path)),
    responses((status = 200, body = KeyView), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn revoke_api_key(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Json<KeyView>> {
    for _ in 0..crate::store::TXN_ATTEMPTS {
        let mut txn = state.db.txn();
        let mut key = txn
            .api_key(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no API key {id}")))?;
        key.revoked_at.get_or_insert(state.now());
        txn.put_api_key(&key);
        if txn.commit().await? {
            return Ok(Json((&key).into()));
        }
    }
    Err(ApiError::contended())
}

/// Refuses publisher accounts that do not exist or are organisations.
async fn check_publisher_account(state: &crate::State, id: &str) -> ApiResult<()> {
    if load_account(state, id).await?.kind == AccountKind::Organisation {
        return Err(ApiError::conflict(
            "organisation_account",
            format!("{id} is an organisation; name the publishing member account"),
        ));
    }
    Ok(())
}

#[utoipa::path(
    post,
    path = "/v1/products",
    tag = "products",
    request_body = NewProduct,
    responses((status = 201, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn create_product(
    axum::extract::State(state): St,
    _: Operator,
    Body(req): Body<NewProduct>,
) -> ApiResult<Response> {
    check_id("id", &req.id)?;
    let channels = req.channels.unwrap_or_else(|| vec!["stable".into()]);
    for c in &channels {
        check_id("channel", c)?;
    }
    for p in &req.publishers {
        check_publisher_account(&state, p).await?;
    }
    let mut txn = state.db.txn();
    if txn.product(&req.id).await?.is_some() {
        return Err(ApiError::conflict(
            "exists",
            format!("product {} exists", req.id),
        ));
    }
    let product = Product {
        name: req.name.unwrap_or_else(|| req.id.clone()),
        id: req.id,
        paid: req.paid,
        channels: channels
            .into_iter()
            .map(|name| Channel {
                name,
                private: false,
                allow: vec![],
                origin_budget: None,
                preload_days: None,
            })
            .collect(),
        publisher_keys: vec![],
        publishers: req.publishers,
        created_at: state.now(),
    };
    txn.put_product(&product);
    // Expected absent: of two replicas creating one id, one wins.
    if !txn.commit().await? {
        return Err(ApiError::conflict(
            "exists",
            format!("product {} exists", product.id),
        ));
    }
    Ok(created(product))
}

#[utoipa::path(
    get,
    path = "/v1/products",
    tag = "products",
    responses((status = 200, body = Vec<Product>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn list_products(
    axum::extract::State(state): St,
    caller: super::Caller,
) -> ApiResult<Json<Vec<Product>>> {
    caller.require(&[Role::Operator, Role::Publisher])?;
    let mut products = state.db.products(10_000).await?;
    products.retain(|p| caller.publishes(p));
    Ok(Json(products))
}

#[utoipa::path(
    get,
    path = "/v1/products/{id}",
    tag = "products",
    params(("id" = String, Path)),
    responses((status = 200, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn get_product(
    axum::extract::State(state): St,
    caller: super::Caller,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Json<Product>> {
    Ok(Json(caller.product_to_publish(&state, &id).await?))
}

/// `POST /v1/products/{id}/publishers`: lets an account publish the product.
#[utoipa::path(
    post,
    path = "/v1/products/{id}/publishers",
    tag = "products",
    params(("id" = String, Path)),
    request_body = NewPublisher,
    responses((status = 200, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn add_publisher(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs(id): PathArgs<String>,
    Body(req): Body<NewPublisher>,
) -> ApiResult<Json<Product>> {
    check_publisher_account(&state, &req.account).await?;
    modify_product(&state, &id, |product| {
        if !product.publishers.contains(&req.account) {
            product.publishers.push(req.account.clone());
        }
        Ok(())
    })
    .await
}

/// `DELETE /v1/products/{id}/publishers/{account}`.
#[utoipa::path(
    delete,
    path = "/v1/products/{id}/publishers/{account}",
    tag = "products",
    params(("id" = String, Path), ("account" = String, Path)),
    responses((status = 200, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn remove_publisher(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs((id, account)): PathArgs<(String, String)>,
) -> ApiResult<Json<Product>> {
    modify_product(&state, &id, |product| {
        if !product.publishers.contains(&account) {
            return Err(ApiError::not_found(format!(
                "{account} does not publish {id}"
            )));
        }
        product.publishers.retain(|a| *a != account);
        Ok(())
    })
    .await
}

/// Loads product `id` (404 when there is none).
async fn load_product(state: &crate::State, id: &str) -> ApiResult<Product> {
    state
        .db
        .product(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no product {id}")))
}

/// Read-modify-write of product `id`: `change` edits it or refuses, and
/// the product is stored durably before the answer. When another request
/// (here or at another replica) changed the product meanwhile, `change`
/// runs again on what that request stored.
async fn modify_product(
    state: &crate::State,
    id: &str,
    change: impl Fn(&mut Product) -> ApiResult<()>,
) -> ApiResult<Json<Product>> {
    for _ in 0..crate::store::TXN_ATTEMPTS {
        let mut txn = state.db.txn();
        let mut product = txn
            .product(id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no product {id}")))?;
        change(&mut product)?;
        txn.put_product(&product);
        if txn.commit().await? {
            return Ok(Json(product));
        }
    }
    Err(ApiError::contended())
}

/// Loads account `id` (404 when there is none).
async fn load_account(state: &crate::State, id: &str) -> ApiResult<Account> {
    state
        .db
        .account(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no account {id}")))
}

/// `201 Created` with `value` as the body.
fn created(value: impl Serialize) -> Response {
    (axum::http::StatusCode::CREATED, Json(value)).into_response()
}

#[utoipa::path(
    post,
    path = "/v1/products/{id}/channels",
    tag = "products",
    params(("id" = String, Path)),
    request_body = NewChannel,
    responses((status = 200, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn add_channel(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs(id): PathArgs<String>,
    Body(req): Body<NewChannel>,
) -> ApiResult<Json<Product>> {
    check_id("name", &req.name)?;
    if req
        .preload_days
        .is_some_and(|d| d > shoal_api::MAX_PRELOAD_DAYS)
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("preload_days is at most {}", shoal_api::MAX_PRELOAD_DAYS),
        ));
    }
    modify_product(&state, &id, |product| {
        if product.channel(&req.name).is_some() {
            return Err(ApiError::conflict(
                "exists",
                format!("{id} already has channel {}", req.name),
            ));
        }
        product.channels.push(Channel {
            name: req.name.clone(),
            private: req.private,
            allow: req.allow.clone(),
            origin_budget: req.origin_budget,
            preload_days: req.preload_days,
        });
        Ok(())
    })
    .await
}

#[utoipa::path(
    put,
    path = "/v1/products/{id}/channels/{channel}/allow",
    tag = "products",
    params(("id" = String, Path), ("channel" = String, Path)),
    request_body = AllowList,
    responses((status = 200, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn set_allow_list(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs((id, channel)): PathArgs<(String, String)>,
    Body(req): Body<AllowList>,
) -> ApiResult<Json<Product>> {
    modify_product(&state, &id, |product| {
        let c = product
            .channels
            .iter_mut()
            .find(|c| c.name == channel)
            .ok_or_else(|| ApiError::not_found(format!("{id} has no channel {channel}")))?;
        c.allow = req.accounts.clone();
        Ok(())
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/products/{id}/publisher-keys",
    tag = "products",
    params(("id" = String, Path)),
    request_body = NewPublisherKey,
    responses((status = 200, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn add_publisher_key(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs(id): PathArgs<String>,
    Body(req): Body<NewPublisherKey>,
) -> ApiResult<Json<Product>> {
    modify_product(&state, &id, |product| {
        if !product.publisher_keys.contains(&req.public_key) {
            product.publisher_keys.push(req.public_key);
        }
        Ok(())
    })
    .await
}

#[utoipa::path(
    delete,
    path = "/v1/products/{id}/publisher-keys/{key}",
    tag = "products",
    params(("id" = String, Path), ("key" = String, Path)),
    responses((status = 200, body = Product), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn remove_publisher_key(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs((id, key)): PathArgs<(String, String)>,
) -> ApiResult<Json<Product>> {
    let key: PublicKey = key
        .parse()
        .map_err(|e| ApiError::bad_request("bad_path", format!("public key: {e}")))?;
    modify_product(&state, &id, |product| {
        product.publisher_keys.retain(|k| *k != key);
        Ok(())
    })
    .await
}

#[utoipa::path(
    post,
    path = "/v1/entitlements",
    tag = "entitlements",
    request_body = NewEntitlement,
    responses((status = 201, body = Entitlement), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn grant(
    axum::extract::State(state): St,
    _: Operator,
    Body(req): Body<NewEntitlement>,
) -> ApiResult<Response> {
    load_account(&state, &req.account).await?;
    let product = load_product(&state, &req.product).await?;
    if let Some(c) = &req.channel
        && product.channel(c).is_none()
    {
        return Err(ApiError::not_found(format!(
            "{} has no channel {c}",
            req.product
        )));
    }
    let entitlement = Entitlement {
        id: state.db.next_id("ent").await?,
        account: req.account,
        product: req.product,
        channel: req.channel,
        expires_at: req.expires_at,
        granted_at: state.now(),
        revoked_at: None,
    };
    state.db.put_entitlement(&entitlement).await?;
    // Durable before acknowledged: a grant survives kill -9 once 201 is sent.
    state.db.flush().await?;
    Ok(created(entitlement))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EntitlementQuery {
    account: String,
}

#[utoipa::path(
    get,
    path = "/v1/entitlements",
    tag = "entitlements",
    params(EntitlementQuery),
    responses((status = 200, body = Vec<Entitlement>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn list_entitlements(
    axum::extract::State(state): St,
    _: Operator,
    QueryArgs(q): QueryArgs<EntitlementQuery>,
) -> ApiResult<Json<Vec<Entitlement>>> {
    Ok(Json(state.db.entitlements_of(&q.account).await?))
}

#[utoipa::path(
    delete,
    path = "/v1/entitlements/{id}",
    tag = "entitlements",
    params(("id" = String, Path)),
    responses((status = 200, body = Entitlement), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn revoke_entitlement(
    axum::extract::State(state): St,
    _: Operator,
    PathArgs(id): PathArgs<String>,
) -> ApiResult<Json<Entitlement>> {
    for _ in 0..crate::store::TXN_ATTEMPTS {
        let mut txn = state.db.txn();
        let mut e = txn
            .entitlement(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no entitlement {id}")))?;
        e.revoked_at.get_or_insert(state.now());
        txn.put_entitlement(&e);
        if txn.commit().await? {
            return Ok(Json(e));
        }
    }
    Err(ApiError::contended())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "default_limit")]
    limit: usize,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    outcome: Option<crate::model::Outcome>,
}

fn default_limit() -> usize {
    1000
}

async fn audit_page(state: &crate::State, q: &AuditQuery) -> ApiResult<Vec<AuditEntry>> {
    let limit = q.limit.clamp(1, 10_000);
    let mut out = Vec::new();
    let mut after = q.after;
    // Filters apply after reading; read in pages until `limit` match or the end.
    loop {
        let page = state.db.audit_after(after, 5000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        out.extend(page.into_iter().filter(|e| {
            q.account.as_ref().is_none_or(|a| *a == e.account)
                && q.outcome.is_none_or(|o| o == e.outcome)
        }));
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "audit",
    params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn audit(
    axum::extract::State(state): St,
    _: Operator,
    QueryArgs(q): QueryArgs<AuditQuery>,
) -> ApiResult<Json<Vec<AuditEntry>>> {
    Ok(Json(audit_page(&state, &q).await?))
}

/// Entries read from the store per page of an export.
const EXPORT_PAGE: usize = 5000;

/// The audit log as JSON lines, one entry per line: every entry after
/// `after` that matches the filters, to the end of the log (or `limit`
/// entries when given), streamed a page at a time so memory stays bounded
/// however long the log is.
#[utoipa::path(
    get,
    path = "/v1/audit/export",
    tag = "audit",
    params(ExportQuery),
    responses((status = 200, description = "One AuditEntry as JSON per line", content_type = "application/x-ndjson", body = String), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn audit_export(
    axum::extract::State(state): St,
    _: Operator,
    QueryArgs(q): QueryArgs<ExportQuery>,
) -> ApiResult<Response> {
    // The first page is read here, so a storage failure is a 503, not a
    // cut-off body.
    let first = state.db.audit_after(q.after, EXPORT_PAGE).await?;
    let left = q.limit.unwrap_or(u64::MAX);
    let pages = futures::stream::unfold(
        (state, q, Some(first), left),
        |(state, q, page, left)| async move {
            let page = match page {
                Some(p) => p,
                None => return None,
            };
            let last = page.last()?.seq;
            let mut left = left;
            let mut body = String::new();
            for e in page.iter().filter(|e| q.matches(e)) {
                if left == 0 {
                    break;
                }
                body.push_str(&serde_json::to_string(e).expect("audit entries serialise"));
                body.push('\n');
                left -= 1;
            }
            let next = if left == 0 || page.len() < EXPORT_PAGE {
                None
            } else {
                match state.db.audit_after(last, EXPORT_PAGE).await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        // Headers are gone: end the body early, loudly. The
                        // client sees a truncated transfer and says so.
                        tracing::error!(error = %e, "audit export stopped by a storage failure");
                        return Some((
                            Err(std::io::Error::other(e.to_string())),
                            (state, q, None, 0),
                        ));
                    }
                }
            };
            Some((Ok::<_, std::io::Error>(body), (state, q, next, left)))
        },
    );
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(pages),
    )
        .into_response())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    #[serde(default)]
    after: u64,
    /// At most this many entries; all of them when absent.
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    outcome: Option<crate::model::Outcome>,
}

impl ExportQuery {
    fn matches(&self, e: &AuditEntry) -> bool {
        self.account.as_ref().is_none_or(|a| *a == e.account)
            && self.outcome.is_none_or(|o| o == e.outcome)
    }
}
