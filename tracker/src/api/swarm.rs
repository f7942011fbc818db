//! The swarm endpoints: swarm tokens, announce (peer lists), seed heartbeats
//! and the operators' aggregated views.

use super::{ApiError, ApiResult, Body, St};
use crate::model::{Account, ApiKey, AuditEntry, Outcome, ReleaseRecord, Role};
use crate::policy::{self, Access, Grant, Refusal, TokenRequest};
use crate::swarm::{PeerInfo, PeerReport, SeedReport, SwarmStats};
use crate::{State, lock};
use axum::Json;
use axum::response::IntoResponse as _;
use shoal_api::{Alias, AnnounceRequest, HeartbeatAnswer, Overview, SwarmAllowance, TokenAnswer};
use shoal_token::{Claims, Release, SignedRelease, Token};
use shoal_types::Hash;

const MAX_ADDRS: usize = 8;
const MAX_ADDR_LEN: usize = 256;
/// Seeds added to a peer list or bootstrap list.
const MAX_SEEDS_LISTED: usize = 4;

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

/// The account `id`, read afresh, or the 401 for a key whose account is
/// gone.
async fn account_of(state: &State, id: &str) -> ApiResult<Account> {
    state
        .db
        .account(id)
        .await?
        .ok_or_else(|| ApiError::new(401, "unauthorized", "the account no longer exists"))
}

/// Which of a channel's releases a token decision is about.
#[derive(Debug)]
pub(super) enum Pick<'a> {
    /// The newest that plays now (an older one while newer ones are
    /// locked); the newest of all, to preload, when none plays.
    Playable,
    /// The newest, locked or not (a preload).
    Newest,
    /// This one (a renewal stays bound to its swarm; a manifest read).
    This(&'a ReleaseRecord),
}

/// A token decision and what it is about.
#[derive(Debug)]
struct Decided {
    decision: Result<(Grant, Access), Refusal>,
    release: Option<ReleaseRecord>,
    /// A newer release, locked, when `release` is an older one that plays.
    upcoming: Option<shoal_api::Upcoming>,
    /// The channel's preload window (days), for a refusal that is early.
    preload_days: u32,
}

/// The token policy's decision for `account` (as just read) on (product,
/// channel) at `now`, with the release `pick` chooses and what it admits
/// to (an encrypted release's preload or unlock). The account, its
/// organisation and their grants are read afresh; the product and the
/// channel's newest release as read within [`crate::Recent::TTL`] on a
/// shared database.
async fn decide(
    state: &State,
    role: Role,
    account: &Account,
    product_id: &str,
    channel: &str,
    pick: Pick<'_>,
    now: u64,
) -> ApiResult<Decided> {
    let org = match &account.org {
        Some(id) => state.db.account(id).await?,
        None => None,
    };
    let product = state.db.product_recent(product_id).await?;
    let on_channel = product.as_ref().and_then(|p| p.channel(channel));
    let (release, upcoming) = match (on_channel, pick) {
        (None, _) => (None, None),
        (Some(_), Pick::This(r)) => (Some(r.clone()), None),
        (Some(_), Pick::Newest) => (
            state.db.latest_release_recent(product_id, channel).await?,
            None,
        ),
        (Some(c), Pick::Playable) => {
            match state.db.latest_release_recent(product_id, channel).await? {
                Some(newest) if !policy::playable(&newest, now) => {
                    let recent = state
                        .db
                        .releases(product_id, channel, policy::LOCKED_AHEAD)
                        .await?;
                    match policy::pick_playable(&recent, now) {
                        (Some(play), Some(next)) if play.version < newest.version => {
                            let opens = policy::preload_opens_at(next, c);
                            let upcoming = shoal_api::Upcoming {
                                version: next.version,
                                unlocks_at: next.unlock_at,
                                preload_opens_at: opens,
                                preload_open: policy::access(next, c, now).is_ok(),
                            };
                            (Some(play.clone()), Some(upcoming))
                        }
                        _ => (Some(newest), None),
                    }
                }
                newest => (newest, None),
            }
        }
    };
    let preload_days = on_channel
        .and_then(|c| c.preload_days)
        .unwrap_or(shoal_api::DEFAULT_PRELOAD_DAYS);
    let own = state.db.entitlements_of(&account.id).await?;
    let org_grants = match &org {
        Some(o) => state.db.entitlements_of(&o.id).await?,
        None => Vec::new(),
    };
    let decision = policy::decide(
        &TokenRequest {
            role,
            account,
            org: org.as_ref(),
            product: product.as_ref(),
            channel,
            has_release: release.is_some(),
            own: &own,
            org_grants: &org_grants,
            now,
        },
        &state.screening,
    )
    .and_then(|grant| {
        let release = release
            .as_ref()
            .expect("policy grants only when a release exists");
        let channel = on_channel.expect("policy grants only on a channel of the product");
        Ok((grant, policy::access(release, channel, now)?))
    });
    Ok(Decided {
        decision,
        release,
        upcoming,
        preload_days,
    })
}

fn refusal(r: Refusal) -> ApiError {
    ApiError::new(r.status(), r.code(), r.detail())
}

/// Whether the caller would be granted a token for `release`: the same
/// decision, neither audited nor counting an identity (no token is
/// issued). Used to gate what only entitled players may read.
pub(super) async fn entitled(
    state: &State,
    caller: &super::Caller,
    release: &ReleaseRecord,
) -> ApiResult<()> {
    let decided = decide(
        state,
        caller.key.role,
        &caller.account,
        &release.product,
        &release.channel,
        Pick::This(release),
        state.now(),
    )
    .await?;
    match decided.decision {
        // Entitled, only early: what it gates (the manifest) is no secret.
        Ok(_) | Err(Refusal::PreloadNotOpen) => Ok(()),
        Err(r) => Err(refusal(r)),
    }
}

/// Runs the token policy for `key`'s account, admits `peer_id` among the
/// account's live identities, and writes the decision to the audit log
/// (durably) before returning it.
async fn decide_and_audit(
    state: &State,
    key: &ApiKey,
    account: &Account,
    product_id: &str,
    channel: &str,
    pick: Pick<'_>,
    peer_id: &str,
) -> ApiResult<(ReleaseRecord, Access, Option<shoal_api::Upcoming>)> {
    let now = state.now();
    let Decided {
        mut decision,
        release,
        upcoming,
        preload_days,
    } = decide(state, key.role, account, product_id, channel, pick, now).await?;
    if decision.is_ok() {
        let until = now + state.config.token_lifetime_secs;
        if let Err(r) = lock(&state.identities).admit(
            &key.account,
            peer_id,
            now,
            until,
            state.config.max_peers_per_account,
        ) {
            decision = Err(r);
        }
    }
    let (outcome, reason) = match decision {
        Ok((grant, _)) => (Outcome::Issued, grant.code()),
        Err(refusal) => (Outcome::Refused, refusal.code()),
    };
    state.count_decision(outcome, reason);
    state
        .db
        .append_audit(AuditEntry {
            seq: 0,
            at: now,
            account: key.account.clone(),
            product: product_id.to_owned(),
            channel: channel.to_owned(),
            peer_id: peer_id.to_owned(),
            outcome,
            reason: reason.to_owned(),
        })
        .await?;
    state.db.flush().await?;
    match decision {
        Ok((_, access)) => Ok((
            release.expect("policy grants only when a release exists"),
            access,
            upcoming,
        )),
        Err(Refusal::PreloadNotOpen) => {
            let release = release.expect("only a release is early");
            Err(ApiError::new(
                403,
                Refusal::PreloadNotOpen.code(),
                format!(
                    "{}/{} v{} is encrypted: its preload opens {} days before it unlocks at {} (seconds since the epoch)",
                    release.product,
                    release.channel,
                    release.version,
                    preload_days,
                    release.unlock_at.unwrap_or_default()
                ),
            ))
        }
        Err(r) => Err(refusal(r)),
    }
}

fn issue(state: &State, release: &ReleaseRecord, key: &ApiKey, peer_id: &str) -> (Token, u64) {
    let now = state.now();
    let expires_at = now + state.config.token_lifetime_secs;
    let claims = Claims {
        version: shoal_token::token_version(),
        swarm: release.id,
        product: release.product.clone(),
        account: key.account.clone(),
        key: key.id.clone(),
        peer_id: peer_id.to_owned(),
        role: shoal_token::Role::Client,
        issued_at: now,
        expires_at,
    };
    let token = Token::issue(&claims, &state.key);
    lock(&state.tokens).insert(crate::TokenCache::fingerprint(&token.to_text()), claims);
    (token, expires_at)
}

/// The key a token was issued under, if it still stands: present, not
/// revoked, and of the token's account.
async fn standing_key(state: &State, claims: &Claims) -> ApiResult<ApiKey> {
    state
        .db
        .api_key_recent(&claims.key)
        .await?
        .filter(|k| k.revoked_at.is_none() && k.account == claims.account)
        .ok_or_else(|| {
            ApiError::new(
                401,
                "key_revoked",
                "the API key this token was issued under was revoked; ask for a new token with a valid key",
            )
        })
}

/// The least-loaded fresh seeds holding the build of `release` that have
/// capacity left; when every one is full, the least loaded anyway (the swarm
/// then raises the no-capacity alert). Stale seeds never.
/// Most relays named in one announce answer.
const MAX_RELAYS_LISTED: usize = 2;

/// Fresh seeds of `release`'s build that run a relay, least loaded first.
fn relays_for(state: &State, release: &ReleaseRecord) -> Vec<PeerInfo> {
    let now = state.now();
    let registry = lock(&state.seeds);
    let mut relays: Vec<_> = registry
        .for_content(
            &release.manifest_hash,
            now,
            state.config.seed_timeout_secs,
            usize::MAX,
        )
        .into_iter()
        .filter(|s| s.report.relay)
        .collect();
    relays.sort_by_key(|s| s.report.peers);
    relays
        .into_iter()
        .take(MAX_RELAYS_LISTED)
        .map(|s| seed_info(s, false))
        .collect()
}

fn seed_info(s: &crate::swarm::SeedState, fills: bool) -> PeerInfo {
    PeerInfo {
        peer_id: s.report.peer_id.clone(),
        addrs: s.report.addrs.clone(),
        seed: true,
        reachability: shoal_types::Reachability::Public,
        same_site: false,
        fills,
    }
}

fn seeds_for(state: &State, release: &ReleaseRecord) -> Vec<PeerInfo> {
    let now = state.now();
    let registry = lock(&state.seeds);
    let fresh = registry.for_content(
        &release.manifest_hash,
        now,
        state.config.seed_timeout_secs,
        usize::MAX,
    );
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
    let fills = crate::policy::seeds_fill(
        release.budget_bytes(),
        registry.sent_to(&release.id),
        release.total_size,
    );
    chosen
        .into_iter()
        .take(MAX_SEEDS_LISTED)
        .map(|s| seed_info(s, fills))
        .collect()
}

/// `POST /v1/tokens`: a swarm token for (product, channel), bound to `peer_id`.
#[utoipa::path(
    post,
    path = "/v1/tokens",
    tag = "swarm",
    request_body = shoal_api::TokenRequest,
    responses((status = 200, body = shoal_api::TokenAnswer), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn token(
    axum::extract::State(state): St,
    caller: super::Caller,
    Body(req): Body<shoal_api::TokenRequest>,
) -> ApiResult<axum::response::Response> {
    if !shoal_token::check_peer_id(&req.peer_id) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "peer_id must be a libp2p PeerId in base58",
        ));
    }
    super::admin::check_id("product", &req.product)?;
    super::admin::check_id("channel", &req.channel)?;
    let now_ms = state.now().saturating_mul(1000);
    if let Err(wait) = lock(&state.token_rate).take(
        &caller.key.id,
        now_ms,
        state.config.token_requests_per_minute,
    ) {
        state.count_decision(Outcome::Refused, "rate_limited");
        let mut response = ApiError::new(
            429,
            "rate_limited",
            format!(
                "this key asked for more than {} tokens a minute; retry in {wait} s",
                state.config.token_requests_per_minute
            ),
        )
        .into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(wait),
        );
        return Ok(response);
    }
    let pick = if req.preload {
        Pick::Newest
    } else {
        Pick::Playable
    };
    let (release, access, upcoming) = decide_and_audit(
        &state,
        &caller.key,
        &caller.account,
        &req.product,
        &req.channel,
        pick,
        &req.peer_id,
    )
    .await?;
    let (token, expires_at) = issue(&state, &release, &caller.key, &req.peer_id);
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
    bootstrap.extend(seeds_for(&state, &release));
    let (content_key, unlocks_at) = match access {
        Access::Open => (None, None),
        Access::Preload { unlocks_at } => (None, unlocks_at),
        // Cached per release: a launch-minute storm reads it once.
        Access::Unlocked => (
            crate::content_keys::get(&state, &release.manifest_hash)
                .await?
                .map(|k| k.to_hex()),
            release.unlock_at,
        ),
    };
    let unlocks_in = match access {
        Access::Preload { unlocks_at } => unlocks_at.map(|t| t.saturating_sub(now)),
        Access::Open | Access::Unlocked => None,
    };
    Ok(Json(TokenAnswer {
        sealed: release.key_check.is_some(),
        content_key,
        unlocks_at,
        unlocks_in,
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
        upcoming,
    })
    .into_response())
}

/// The announce answer, a [`shoal_api::AnnounceAnswer`] on the wire, built
/// by splicing members' cached JSON listings, since it is the tracker's
/// hottest path (a test decodes it as the type).
fn announce_answer(
    interval: u64,
    listings: &[std::sync::Arc<str>],
    seeds: &[PeerInfo],
    relays: &[PeerInfo],
    stats: &SwarmStats,
    renewed: Option<(String, u64)>,
) -> axum::response::Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        announce_body(interval, listings, seeds, relays, stats, renewed),
    )
        .into_response()
}

/// The JSON text of [`announce_answer`].
fn announce_body(
    interval: u64,
    listings: &[std::sync::Arc<str>],
    seeds: &[PeerInfo],
    relays: &[PeerInfo],
    stats: &SwarmStats,
    renewed: Option<(String, u64)>,
) -> String {
    let mut body = String::with_capacity(64 + listings.iter().map(|l| l.len() + 1).sum::<usize>());
    body.push_str("{\"interval\":");
    body.push_str(&interval.to_string());
    body.push_str(",\"peers\":[");
    let seeds_json: Vec<String> = seeds
        .iter()
        .map(|s| serde_json::to_string(s).expect("peer info serialises"))
        .collect();
    for (i, part) in listings
        .iter()
        .map(|l| &**l)
        .chain(seeds_json.iter().map(String::as_str))
        .enumerate()
    {
        if i > 0 {
            body.push(',');
        }
        body.push_str(part);
    }
    body.push_str("],\"relays\":");
    body.push_str(&serde_json::to_string(relays).expect("peer info serialises"));
    body.push_str(",\"swarm\":");
    body.push_str(&serde_json::to_string(stats).expect("stats serialise"));
    if let Some((token, expires)) = renewed {
        body.push_str(",\"token\":");
        body.push_str(&serde_json::to_string(&token).expect("strings serialise"));
        body.push_str(",\"token_expires_at\":");
        body.push_str(&expires.to_string());
    }
    body.push('}');
    body
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
#[utoipa::path(
    post,
    path = "/v1/announce",
    tag = "swarm",
    request_body = shoal_api::AnnounceRequest,
    responses((status = 200, body = shoal_api::AnnounceAnswer), super::openapi::Refusals)
)]
pub async fn announce(
    axum::extract::State(state): St,
    remote: super::Remote,
    Body(req): Body<AnnounceRequest>,
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
    let leave = || {
        state.with_swarm(&claims.swarm, |s| s.remove(&claims.peer_id));
        lock(&state.identities).release(&claims.account, &claims.peer_id);
        if let Some(r) = &state.replicas {
            r.note(claims.swarm, &claims.peer_id, None, now);
        }
    };
    // A revoked key ends its tokens' announces at once: no peer list, no
    // renewal (peers still honour a token they hold until it expires).
    let key = match standing_key(&state, &claims).await {
        Ok(k) => k,
        Err(e) => {
            leave();
            return Err(e);
        }
    };
    let interval = state.config.announce_interval_secs;
    if req.stopped {
        leave();
        return Ok(announce_answer(
            interval,
            &[],
            &[],
            &[],
            &SwarmStats::default(),
            None,
        ));
    }

    let release = state
        .db
        .release_recent(&claims.swarm)
        .await?
        .ok_or_else(|| ApiError::not_found("the swarm's release is gone"))?;
    // Renew a token in its last third of life, re-checking everything a new
    // token request checks (the key above; role, screening, entitlement and
    // the identity bound here).
    let mut renewed = None;
    if claims.expires_at.saturating_sub(now) < state.config.token_lifetime_secs / 3 {
        let account = match account_of(&state, &key.account).await {
            Ok(a) => a,
            Err(e) => {
                leave();
                return Err(e);
            }
        };
        match decide_and_audit(
            &state,
            &key,
            &account,
            &release.product,
            &release.channel,
            Pick::This(&release),
            &claims.peer_id,
        )
        .await
        {
            Ok(_) => {
                // The token stays bound to the same release (swarm).
                let (token, expires) = issue(&state, &release, &key, &claims.peer_id);
                renewed = Some((token.to_text(), expires));
            }
            Err(e) => {
                leave();
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
        reachability: req.reachability,
        site: remote.site(state.config.trust_forwarded_for),
    };
    // A client nobody can dial is told the relays it may reserve a slot on
    // (seeds of this build: it presents its token to them anyway), until it
    // announces a `/p2p-circuit` address.
    let relays = if req.reachability == shoal_types::Reachability::Private && !report.has_circuit()
    {
        relays_for(&state, &release)
    } else {
        Vec::new()
    };
    if let Some(r) = &state.replicas {
        r.note(claims.swarm, &claims.peer_id, Some(report.clone()), now);
    }
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
        seeds = seeds_for(&state, &release);
        peers.truncate(state.config.max_peers.saturating_sub(seeds.len()));
    }
    Ok(announce_answer(
        interval, &peers, &seeds, &relays, &stats, renewed,
    ))
}

/// Most aliases in one heartbeat answer.
const MAX_ALIASES: usize = 1000;

/// What a seed holding `held` serves: the builds (manifest hashes) those
/// releases are of, the other releases of the same channels with the same
/// builds (aliases), and the records of every release it serves.
struct Served {
    content: std::collections::HashSet<Hash>,
    aliases: Vec<Alias>,
    records: Vec<ReleaseRecord>,
}

async fn content_of(state: &State, held: &[Hash]) -> ApiResult<Served> {
    let mut content = std::collections::HashSet::new();
    let mut by_manifest: std::collections::HashMap<Hash, Hash> = Default::default();
    let mut channels = std::collections::BTreeSet::new();
    let mut records = Vec::new();
    for id in held {
        if let Some(r) = state.db.release(id).await? {
            content.insert(r.manifest_hash);
            by_manifest.entry(r.manifest_hash).or_insert(*id);
            channels.insert((r.product.clone(), r.channel.clone()));
            records.push(r);
        }
    }
    let held: std::collections::HashSet<&Hash> = held.iter().collect();
    let mut aliases = Vec::new();
    for (product, channel) in channels {
        for r in state.db.releases(&product, &channel, 1000).await? {
            if let Some(source) = by_manifest.get(&r.manifest_hash)
                && !held.contains(&r.id)
                && aliases.len() < MAX_ALIASES
            {
                aliases.push(Alias {
                    release: r.id,
                    held: *source,
                });
                records.push(r);
            }
        }
    }
    Ok(Served {
        content,
        aliases,
        records,
    })
}

/// `POST /v1/seeds/heartbeat`: a seed's capacity, load and holdings.
#[utoipa::path(
    post,
    path = "/v1/seeds/heartbeat",
    tag = "swarm",
    request_body = shoal_api::SeedReport,
    responses((status = 200, body = shoal_api::HeartbeatAnswer), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn heartbeat(
    axum::extract::State(state): St,
    caller: super::Caller,
    Body(report): Body<SeedReport>,
) -> ApiResult<Json<HeartbeatAnswer>> {
    caller.require(&[Role::Seed])?;
    if !shoal_types::id::is_valid(&report.seed_id)
        || report.releases.len() > 100_000
        || report.sent.len() > 100_000
    {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!(
                "seed_id must be {}; at most 100,000 releases and sent entries",
                shoal_types::id::RULE
            ),
        ));
    }
    if !shoal_token::check_peer_id(&report.peer_id) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "peer_id must be a libp2p PeerId in base58",
        ));
    }
    check_addrs(&report.addrs)?;
    let Served {
        content,
        aliases,
        records,
    } = content_of(&state, &report.releases).await?;
    let seed_id = report.seed_id.clone();
    lock(&state.seeds)
        .heartbeat(
            state.now(),
            &caller.account.id,
            report,
            content,
            state.config.max_seeds_per_account,
        )
        .map_err(|e| match e {
            crate::swarm::SeedRefusal::Taken(_) => {
                ApiError::conflict("seed_id_taken", e.to_string())
            }
            crate::swarm::SeedRefusal::TooMany(_) => {
                ApiError::new(403, "too_many_seeds", e.to_string())
            }
        })?;
    let allowances = allowances(&state, &seed_id, &records);
    Ok(Json(HeartbeatAnswer {
        interval: (state.config.seed_timeout_secs / 3).max(1),
        aliases,
        allowances,
    }))
}

/// Seed `seed_id`'s share of the origin budget of each release it serves
/// (`served`; see `policy::budget_share`), shared with the fresh seeds
/// holding the same build.
fn allowances(state: &State, seed_id: &str, served: &[ReleaseRecord]) -> Vec<SwarmAllowance> {
    let (now, timeout) = (state.now(), state.config.seed_timeout_secs);
    let seeds = lock(&state.seeds);
    let me = seeds.get(seed_id);
    served
        .iter()
        .map(|r| SwarmAllowance {
            release: r.id,
            bytes: crate::policy::budget_share(
                r.budget_bytes(),
                seeds.sent_to(&r.id),
                me.map_or(0, |s| s.sent(&r.id)),
                seeds
                    .for_content(&r.manifest_hash, now, timeout, usize::MAX)
                    .len(),
            ),
        })
        .collect()
}

/// `GET /v1/ops/swarms`: per-swarm aggregates.
#[utoipa::path(
    get,
    path = "/v1/ops/swarms",
    tag = "ops",
    responses((status = 200, body = Vec<crate::ops::SwarmView>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn ops_swarms(
    axum::extract::State(state): St,
    _: super::Operator,
) -> ApiResult<Json<Vec<crate::ops::SwarmView>>> {
    Ok(Json(state.views().await?.0))
}

/// `GET /v1/ops/seeds`: per-seed capacity and load.
#[utoipa::path(
    get,
    path = "/v1/ops/seeds",
    tag = "ops",
    responses((status = 200, body = Vec<crate::ops::SeedView>), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn ops_seeds(
    axum::extract::State(state): St,
    _: super::Operator,
) -> ApiResult<Json<Vec<crate::ops::SeedView>>> {
    Ok(Json(state.views().await?.1))
}

/// `GET /v1/ops/overview`: views, alerts, recent refusals and history.
#[utoipa::path(
    get,
    path = "/v1/ops/overview",
    tag = "ops",
    responses((status = 200, body = Overview), super::openapi::Refusals),
    security(("api_key" = []))
)]
pub async fn ops_overview(
    axum::extract::State(state): St,
    _: super::Operator,
) -> ApiResult<Json<Overview>> {
    let (swarms, seeds) = state.views().await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: &str, seed: bool) -> PeerInfo {
        PeerInfo {
            peer_id: id.into(),
            addrs: vec![format!("/ip4/10.0.0.1/udp/4433/quic-v1/p2p/{id}")],
            seed,
            reachability: shoal_types::Reachability::Public,
            same_site: false,
            fills: false,
        }
    }

    /// The spliced announce answer is exactly the API type on the wire:
    /// members' cached listings, then seeds, relays, totals, a renewed token.
    #[test]
    fn the_spliced_announce_answer_decodes_as_the_api_type() {
        let listing: std::sync::Arc<str> = serde_json::to_string(&peer("a", false)).unwrap().into();
        let stats = SwarmStats {
            peers: 2,
            complete: 1,
            ..SwarmStats::default()
        };
        for renewed in [None, Some(("t0k".to_owned(), 99))] {
            let text = announce_body(
                30,
                std::slice::from_ref(&listing),
                &[peer("s", true)],
                &[peer("r", true)],
                &stats,
                renewed.clone(),
            );
            let answer: shoal_api::AnnounceAnswer = serde_json::from_str(&text).unwrap();
            assert_eq!(
                answer,
                shoal_api::AnnounceAnswer {
                    interval: 30,
                    peers: vec![peer("a", false), peer("s", true)],
                    relays: vec![peer("r", true)],
                    swarm: stats.clone(),
                    token: renewed.as_ref().map(|r| r.0.clone()),
                    token_expires_at: renewed.as_ref().map(|r| r.1),
                }
            );
        }
    }
}
