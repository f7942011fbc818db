//! The swarm endpoints: swarm tokens, announce (peer lists), seed heartbeats
//! and the operators' aggregated views.

use super::{ApiError, ApiResult, Body, St};
use crate::model::{AuditEntry, Outcome, Role};
use crate::policy::{self, TokenRequest};
use crate::swarm::{PeerInfo, PeerReport, SeedReport, SwarmStats};
use crate::{State, lock};
use axum::Json;
use axum::response::IntoResponse as _;
use serde::{Deserialize, Serialize};
use shoal_token::{Claims, Release, SignedRelease, Token};
use shoal_types::Hash;

const MAX_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 256;
/// Seeds added to a peer list or bootstrap list.
const MAX_SEEDS_LISTED: usize = 4;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequestBody {
    product: String,
    channel: String,
    peer_id: String,
}

#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The swarm token (hex).
    pub token: String,
    pub expires_at: u64,
    /// The release id, which names the swarm.
    pub swarm: Hash,
    /// Release metadata signed by the tracker (hex), freshly dated.
    pub release: String,
    pub version: u64,
    pub manifest_hash: Hash,
    pub manifest_url: String,
    pub total_size: u64,
    /// A few peers, then seeds.
    pub bootstrap: Vec<PeerInfo>,
    pub announce_interval: u64,
}

fn check_addrs(addrs: &[String]) -> ApiResult<()> {
    if addrs.len() > MAX_ADDRS
        || addrs
            .iter()
            .any(|a| a.is_empty() || a.len() > MAX_ADDR_LEN || !a.starts_with('/'))
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "listen addresses: at most {MAX_ADDRS} multiaddrs of at most {MAX_ADDR_LEN} characters"
            ),
        ));
    }
    Ok(())
}

/// Runs the token policy for `account` and writes the decision to the audit
/// log (durably) before returning it.
fn decide_and_audit(
    state: &State,
    role: Role,
    account_id: &str,
    product_id: &str,
    channel: &str,
    peer_id: &str,
) -> ApiResult<crate::model::ReleaseRecord> {
    let now = state.now();
    let account = state
        .db
        .account(account_id)?
        .ok_or_else(|| ApiError::new(401, "unauthorized", "the account no longer exists"))?;
    let org = match &account.org {
        Some(id) => state.db.account(id)?,
        None => None,
    };
    let product = state.db.product(product_id)?;
    let release = match &product {
        Some(p) if p.channel(channel).is_some() => state.db.latest_release(product_id, channel)?,
        _ => None,
    };
    let own = state.db.entitlements_of(&account.id)?;
    let org_grants = match &org {
        Some(o) => state.db.entitlements_of(&o.id)?,
        None => Vec::new(),
    };
    let decision = policy::decide(
        &TokenRequest {
            role,
            account: &account,
            org: org.as_ref(),
            product: product.as_ref(),
            channel,
            has_release: release.is_some(),
            own: &own,
            org_grants: &org_grants,
            now,
        },
        &state.screening,
    );
    let (outcome, reason) = match decision {
        Ok(grant) => (Outcome::Issued, grant.code()),
        Err(refusal) => (Outcome::Refused, refusal.code()),
    };
    state.count_decision(outcome, reason);
    state.db.append_audit(AuditEntry {
        seq: 0,
        at: now,
        account: account.id.clone(),
        product: product_id.to_owned(),
        channel: channel.to_owned(),
        peer_id: peer_id.to_owned(),
        outcome,
        reason: reason.to_owned(),
    })?;
    state.db.flush()?;
    match decision {
        Ok(_) => Ok(release.expect("policy grants only when a release exists")),
        Err(r) => Err(ApiError::new(r.status(), r.code(), r.detail())),
    }
}

fn issue(
    state: &State,
    release: &crate::model::ReleaseRecord,
    account: &str,
    peer_id: &str,
) -> (Token, u64) {
    let now = state.now();
    let expires_at = now + state.config.token_lifetime_secs;
    let claims = Claims {
        version: shoal_token::token_version(),
        swarm: release.id,
        product: release.product.clone(),
        account: account.to_owned(),
        peer_id: peer_id.to_owned(),
        role: shoal_token::Role::Client,
        issued_at: now,
        expires_at,
    };
    let token = Token::issue(&claims, &state.key);
    lock(&state.tokens).insert(crate::TokenCache::fingerprint(&token.to_text()), claims);
    (token, expires_at)
}

/// The least-loaded fresh seeds holding `release` that have capacity left;
/// when every one is full, the least loaded anyway (the swarm then raises
/// the no-capacity alert). Stale seeds never.
fn seeds_for(state: &State, release: &Hash) -> Vec<PeerInfo> {
    let now = state.now();
    let registry = lock(&state.seeds);
    let fresh = registry.for_release(release, now, state.config.seed_timeout_secs, usize::MAX);
    let with_capacity: Vec<_> = fresh
        .iter()
        .copied()
        .filter(|s| crate::ops::has_capacity(s))
        .collect();
    let chosen = if with_capacity.is_empty() {
        fresh
    } else {
        with_capacity
    };
    chosen
        .into_iter()
        .take(MAX_SEEDS_LISTED)
        .map(|s| PeerInfo {
            peer_id: s.report.peer_id.clone(),
            addrs: s.report.addrs.clone(),
            seed: true,
        })
        .collect()
}

/// `POST /v1/tokens`: a swarm token for (product, channel), bound to `peer_id`.
pub async fn token(
    axum::extract::State(state): St,
    caller: super::Caller,
    Body(req): Body<TokenRequestBody>,
) -> ApiResult<Json<TokenResponse>> {
    if !shoal_token::check_peer_id(&req.peer_id) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "peer_id must be a libp2p PeerId in base58",
        ));
    }
    if req.product.len() > 64 || req.channel.len() > 64 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "product and channel are at most 64 characters",
        ));
    }
    let release = decide_and_audit(
        &state,
        caller.key.role,
        &caller.account.id,
        &req.product,
        &req.channel,
        &req.peer_id,
    )?;
    let (token, expires_at) = issue(&state, &release, &caller.account.id, &req.peer_id);
    let now = state.now();
    let signed = SignedRelease::sign(
        &Release {
            product: release.product.clone(),
            channel: release.channel.clone(),
            version: release.version,
            manifest_hash: release.manifest_hash,
            total_size: release.total_size,
            publisher: release.publisher,
            published_at: release.published_at,
            expires_at: now + state.config.release_metadata_ttl_secs,
        },
        &state.key,
    );
    let mut rng = state.rng();
    let mut bootstrap = state.with_swarm(&release.id, |s| {
        s.pick(&req.peer_id, None, state.config.bootstrap_peers, &mut rng)
    });
    bootstrap.extend(seeds_for(&state, &release.id));
    Ok(Json(TokenResponse {
        token: token.to_text(),
        expires_at,
        swarm: release.id,
        release: signed.to_text(),
        version: release.version,
        manifest_hash: release.manifest_hash,
        manifest_url: super::releases::manifest_url(&release.id),
        total_size: release.total_size,
        bootstrap,
        announce_interval: state.config.announce_interval_secs,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnounceBody {
    token: String,
    listen_addrs: Vec<String>,
    /// Chunks held.
    have: u64,
    complete: bool,
    uploaded: u64,
    downloaded: u64,
    downloaded_from_seeds: u64,
    #[serde(default)]
    region: Option<String>,
    /// The client cannot get chunks from peers fast enough: list seeds.
    #[serde(default)]
    starving: bool,
    /// The client is leaving the swarm.
    #[serde(default)]
    stopped: bool,
}

/// The announce answer: `{interval, peers: [PeerInfo…], swarm: SwarmStats,
/// token?, token_expires_at?}`. Built by splicing members' cached JSON
/// listings, since it is the tracker's hottest path.
fn announce_answer(
    interval: u64,
    listings: &[std::sync::Arc<str>],
    seeds: &[PeerInfo],
    stats: &SwarmStats,
    renewed: Option<(String, u64)>,
) -> axum::response::Response {
    let mut body = String::with_capacity(64 + listings.iter().map(|l| l.len() + 1).sum::<usize>());
    body.push_str("{\"interval\":");
    body.push_str(&interval.to_string());
    body.push_str(",\"peers\":[");
    let seeds_json = seeds
        .iter()
        .map(|s| serde_json::to_string(s).expect("peer info serialises"));
    for (i, part) in listings
        .iter()
        .map(|l| l.to_string())
        .chain(seeds_json)
        .enumerate()
    {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&part);
    }
    body.push_str("],\"swarm\":");
    body.push_str(&serde_json::to_string(stats).expect("stats serialise"));
    if let Some((token, expires)) = renewed {
        body.push_str(",\"token\":");
        body.push_str(&serde_json::to_string(&token).expect("strings serialise"));
        body.push_str(",\"token_expires_at\":");
        body.push_str(&expires.to_string());
    }
    body.push('}');
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Checks a token presented to the tracker: cached fingerprints skip the
/// signature check, which is too slow for every announce.
fn check_token(state: &State, text: &str, now: u64) -> ApiResult<Claims> {
    let bad = |e: shoal_token::TokenError| {
        let code = match e {
            shoal_token::TokenError::Expired { .. } => "token_expired",
            _ => "bad_token",
        };
        ApiError::new(401, code, e.to_string())
    };
    // Keyed by the text itself, so a cache hit skips decoding too.
    let fingerprint = crate::TokenCache::fingerprint(text);
    let cached = lock(&state.tokens).get(&fingerprint);
    let claims = match cached {
        Some(c) => c,
        None => {
            let token = Token::from_text(text).map_err(bad)?;
            let c = token.verify_signature(&state.key.public()).map_err(bad)?;
            lock(&state.tokens).insert(fingerprint, c.clone());
            c
        }
    };
    claims.check_time(now).map_err(bad)?;
    Ok(claims)
}

/// `POST /v1/announce`: report progress, get peers.
pub async fn announce(
    axum::extract::State(state): St,
    Body(req): Body<AnnounceBody>,
) -> ApiResult<axum::response::Response> {
    let now = state.now();
    check_addrs(&req.listen_addrs)?;
    if req.region.as_ref().is_some_and(|r| r.len() > 32) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "region is at most 32 characters",
        ));
    }
    let claims = check_token(&state, &req.token, now)?;
    state
        .announces
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let interval = state.config.announce_interval_secs;
    if req.stopped {
        state.with_swarm(&claims.swarm, |s| s.remove(&claims.peer_id));
        return Ok(announce_answer(
            interval,
            &[],
            &[],
            &SwarmStats::default(),
            None,
        ));
    }

    // Renew a token in its last third of life, re-checking entitlement.
    let mut renewed = None;
    if claims.expires_at.saturating_sub(now) < state.config.token_lifetime_secs / 3 {
        let release = state
            .db
            .release(&claims.swarm)?
            .ok_or_else(|| ApiError::not_found("the swarm's release is gone"))?;
        match decide_and_audit(
            &state,
            Role::Player,
            &claims.account,
            &release.product,
            &release.channel,
            &claims.peer_id,
        ) {
            Ok(_) => {
                // The token stays bound to the same release (swarm).
                let (token, expires) = issue(&state, &release, &claims.account, &claims.peer_id);
                renewed = Some((token.to_text(), expires));
            }
            Err(e) => {
                state.with_swarm(&claims.swarm, |s| s.remove(&claims.peer_id));
                return Err(e);
            }
        }
    }

    let report = PeerReport {
        peer_id: claims.peer_id.clone(),
        account: claims.account.clone(),
        addrs: req.listen_addrs,
        region: req.region.clone(),
        have: req.have,
        complete: req.complete,
        uploaded: req.uploaded,
        downloaded: req.downloaded,
        downloaded_from_seeds: req.downloaded_from_seeds,
    };
    let mut rng = state.rng();
    let (mut peers, stats) = state.with_swarm(&claims.swarm, |s| {
        s.announce(now, report);
        (
            s.pick_listings(
                &claims.peer_id,
                req.region.as_deref(),
                state.config.max_peers,
                &mut rng,
            ),
            s.stats(),
        )
    });
    let mut seeds = Vec::new();
    if req.starving || stats.complete < state.config.min_complete_peers {
        seeds = seeds_for(&state, &claims.swarm);
        peers.truncate(state.config.max_peers.saturating_sub(seeds.len()));
    }
    Ok(announce_answer(interval, &peers, &seeds, &stats, renewed))
}

#[derive(Debug, Serialize)]
pub struct HeartbeatResponse {
    /// Seconds until the next heartbeat is due.
    pub interval: u64,
}

/// `POST /v1/seeds/heartbeat`: a seed's capacity, load and holdings.
pub async fn heartbeat(
    axum::extract::State(state): St,
    caller: super::Caller,
    Body(report): Body<SeedReport>,
) -> ApiResult<Json<HeartbeatResponse>> {
    caller.require(&[Role::Seed])?;
    if report.seed_id.is_empty() || report.seed_id.len() > 64 || report.releases.len() > 100_000 {
        return Err(ApiError::bad_request(
            "invalid_field",
            "seed_id is 1 to 64 characters; at most 100,000 releases",
        ));
    }
    if !shoal_token::check_peer_id(&report.peer_id) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "peer_id must be a libp2p PeerId in base58",
        ));
    }
    check_addrs(&report.addrs)?;
    lock(&state.seeds).heartbeat(state.now(), &caller.account.id, report);
    Ok(Json(HeartbeatResponse {
        interval: (state.config.seed_timeout_secs / 3).max(1),
    }))
}

/// `GET /v1/ops/swarms`: per-swarm aggregates.
pub async fn ops_swarms(
    axum::extract::State(state): St,
    caller: super::Caller,
) -> ApiResult<Json<Vec<crate::ops::SwarmView>>> {
    caller.require(&[Role::Operator])?;
    Ok(Json(state.views()?.0))
}

/// `GET /v1/ops/seeds`: per-seed capacity and load.
pub async fn ops_seeds(
    axum::extract::State(state): St,
    caller: super::Caller,
) -> ApiResult<Json<Vec<crate::ops::SeedView>>> {
    caller.require(&[Role::Operator])?;
    Ok(Json(state.views()?.1))
}

/// Everything the dashboard and `shoal ops status` show.
#[derive(Debug, Serialize)]
pub struct Overview {
    pub now: u64,
    pub swarms: Vec<crate::ops::SwarmView>,
    pub seeds: Vec<crate::ops::SeedView>,
    pub alerts: Vec<crate::ops::Alert>,
    /// Token refusals in the last hour: (reason, count).
    pub refusals: Vec<(String, u64)>,
    /// The last hour of offload and seed utilisation.
    pub history: Vec<crate::ops::Sample>,
}

/// `GET /v1/ops/overview`: views, alerts, recent refusals and history.
pub async fn ops_overview(
    axum::extract::State(state): St,
    caller: super::Caller,
) -> ApiResult<Json<Overview>> {
    caller.require(&[Role::Operator])?;
    let (swarms, seeds) = state.views()?;
    let now = state.now();
    let ops = lock(&state.ops);
    Ok(Json(Overview {
        now,
        alerts: crate::ops::alerts(&swarms, &seeds),
        refusals: ops.recent_refusals(now),
        history: ops.samples.iter().cloned().collect(),
        swarms,
        seeds,
    }))
}
