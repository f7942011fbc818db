//! The authorisation matrix: every route × every kind of caller, with the
//! status each must get, from one table. A second test reads the router's
//! source, so a route added without its row fails here.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Tracker, peer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_tracker::Config;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No `Authorization` header.
    Nobody,
    /// A player entitled to `game`.
    Player,
    /// A player of another account, entitled to nothing.
    OtherPlayer,
    /// A publisher key of the account that publishes `game`.
    Publisher,
    /// A publisher key of the account that publishes `other` only.
    OtherPublisher,
    Seed,
    Operator,
    /// An operator key that was revoked.
    Revoked,
}

const EVERYONE: [Who; 8] = [
    Who::Nobody,
    Who::Player,
    Who::OtherPlayer,
    Who::Publisher,
    Who::OtherPublisher,
    Who::Seed,
    Who::Operator,
    Who::Revoked,
];

/// Ids the rows need, made by `setup`.
struct Ids {
    org: String,
    member: String,
    spare_account: String,
    spare_key: String,
    spare_entitlement: String,
    release: String,
    player_token: String,
}

/// One row: a route, how to call it, and the status for each caller.
struct Row {
    method: Method,
    /// The route as the router names it.
    route: &'static str,
    path: fn(&Ids) -> String,
    body: fn(&Ids) -> Option<Value>,
    expect: fn(Who) -> u16,
}

/// Operators only: `ok` for them, 401 without a valid key, 403 otherwise.
fn operator(who: Who, ok: u16) -> u16 {
    match who {
        Who::Operator => ok,
        Who::Nobody | Who::Revoked => 401,
        _ => 403,
    }
}

fn none(_: &Ids) -> Option<Value> {
    None
}

const SPARE_PUBLISHER_KEY: &str =
    "a2c4b1d3e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

macro_rules! op_row {
    ($method:expr, $route:expr, $path:expr, $body:expr, $ok:expr) => {
        Row {
            method: $method,
            route: $route,
            path: $path,
            body: $body,
            expect: |w| operator(w, $ok),
        }
    };
}

fn rows() -> Vec<Row> {
    use Method as M;
    vec![
        Row {
            method: M::GET,
            route: "/v1/health",
            path: |_| "/v1/health".into(),
            body: none,
            expect: |_| 200,
        },
        Row {
            method: M::GET,
            route: "/v1/openapi.json",
            path: |_| "/v1/openapi.json".into(),
            body: none,
            expect: |_| 200,
        },
        op_row!(
            M::POST,
            "/v1/accounts",
            |_| "/v1/accounts".into(),
            |_| Some(json!({"name": "New", "country": "SE"})),
            201
        ),
        op_row!(M::GET, "/v1/accounts", |_| "/v1/accounts".into(), none, 200),
        op_row!(
            M::GET,
            "/v1/accounts/{id}",
            |i| format!("/v1/accounts/{}", i.member),
            none,
            200
        ),
        op_row!(
            M::POST,
            "/v1/accounts/{id}/members",
            |i| format!("/v1/accounts/{}/members", i.org),
            |i| Some(json!({"account": i.member})),
            200
        ),
        op_row!(
            M::DELETE,
            "/v1/accounts/{id}/members/{member}",
            |i| format!("/v1/accounts/{}/members/{}", i.org, i.member),
            none,
            200
        ),
        op_row!(
            M::POST,
            "/v1/api-keys",
            |_| "/v1/api-keys".into(),
            |i| Some(json!({"account": i.spare_account, "role": "player"})),
            201
        ),
        op_row!(M::GET, "/v1/api-keys", |_| "/v1/api-keys".into(), none, 200),
        op_row!(
            M::DELETE,
            "/v1/api-keys/{id}",
            |i| format!("/v1/api-keys/{}", i.spare_key),
            none,
            200
        ),
        op_row!(
            M::POST,
            "/v1/products",
            |_| "/v1/products".into(),
            |_| Some(json!({"id": "brand-new", "paid": true})),
            201
        ),
        Row {
            method: M::GET,
            route: "/v1/products",
            path: |_| "/v1/products".into(),
            body: none,
            expect: |w| match w {
                Who::Operator | Who::Publisher | Who::OtherPublisher => 200,
                Who::Nobody | Who::Revoked => 401,
                _ => 403,
            },
        },
        Row {
            method: M::GET,
            route: "/v1/products/{id}",
            path: |_| "/v1/products/game".into(),
            body: none,
            expect: |w| publisher_of_game(w, 200),
        },
        op_row!(
            M::POST,
            "/v1/products/{id}/channels",
            |_| "/v1/products/game/channels".into(),
            |_| Some(json!({"name": "qa", "private": true})),
            200
        ),
        op_row!(
            M::PUT,
            "/v1/products/{id}/channels/{channel}/allow",
            |_| "/v1/products/game/channels/qa/allow".into(),
            |i| Some(json!({"accounts": [i.member]})),
            200
        ),
        op_row!(
            M::POST,
            "/v1/products/{id}/publisher-keys",
            |_| "/v1/products/game/publisher-keys".into(),
            |_| Some(json!({"public_key": SPARE_PUBLISHER_KEY})),
            200
        ),
        op_row!(
            M::DELETE,
            "/v1/products/{id}/publisher-keys/{key}",
            |_| format!("/v1/products/game/publisher-keys/{SPARE_PUBLISHER_KEY}"),
            none,
            200
        ),
        op_row!(
            M::POST,
            "/v1/products/{id}/publishers",
            |_| "/v1/products/game/publishers".into(),
            |i| Some(json!({"account": i.spare_account})),
            200
        ),
        op_row!(
            M::DELETE,
            "/v1/products/{id}/publishers/{account}",
            |i| format!("/v1/products/game/publishers/{}", i.spare_account),
            none,
            200
        ),
        Row {
            method: M::GET,
            route: "/v1/products/{id}/channels/{channel}/releases",
            path: |_| "/v1/products/game/channels/stable/releases".into(),
            body: none,
            expect: |w| publisher_of_game(w, 200),
        },
        Row {
            method: M::POST,
            route: "/v1/products/{id}/channels/{channel}/rollback",
            path: |_| "/v1/products/game/channels/stable/rollback".into(),
            body: |_| Some(json!({"version": 1})),
            expect: |w| publisher_of_game(w, 201),
        },
        Row {
            method: M::POST,
            route: "/v1/releases",
            path: |_| "/v1/releases".into(),
            // A JSON body is not a manifest: the publisher of any product
            // gets as far as the manifest check; the rest are refused first.
            body: |_| Some(json!({})),
            expect: |w| match w {
                Who::Publisher | Who::OtherPublisher => 422,
                Who::Nobody | Who::Revoked => 401,
                _ => 403,
            },
        },
        Row {
            method: M::GET,
            route: "/v1/releases/{id}/manifest",
            path: |i| format!("/v1/releases/{}/manifest", i.release),
            body: none,
            expect: |w| match w {
                Who::Operator | Who::Seed | Who::Publisher | Who::Player => 200,
                Who::OtherPublisher => 404,
                Who::OtherPlayer => 403,
                Who::Nobody | Who::Revoked => 401,
            },
        },
        // The setup's release is plain: its publisher and operators get as
        // far as "not encrypted"; another publisher learns nothing of it.
        Row {
            method: M::PUT,
            route: "/v1/releases/{id}/key",
            path: |i| format!("/v1/releases/{}/key", i.release),
            body: |_| Some(json!({"content_key": "00".repeat(32)})),
            expect: |w| publisher_of_game(w, 409),
        },
        Row {
            method: M::PUT,
            route: "/v1/releases/{id}/unlock",
            path: |i| format!("/v1/releases/{}/unlock", i.release),
            body: |_| Some(json!({})),
            expect: |w| publisher_of_game(w, 409),
        },
        op_row!(
            M::PUT,
            "/v1/releases/{id}/budget",
            |i| format!("/v1/releases/{}/budget", i.release),
            |_| Some(json!({"origin_budget": 2})),
            200
        ),
        op_row!(
            M::POST,
            "/v1/entitlements",
            |_| "/v1/entitlements".into(),
            |i| Some(json!({"account": i.spare_account, "product": "game"})),
            201
        ),
        op_row!(
            M::GET,
            "/v1/entitlements",
            |i| format!("/v1/entitlements?account={}", i.member),
            none,
            200
        ),
        op_row!(
            M::DELETE,
            "/v1/entitlements/{id}",
            |i| format!("/v1/entitlements/{}", i.spare_entitlement),
            none,
            200
        ),
        op_row!(M::GET, "/v1/audit", |_| "/v1/audit".into(), none, 200),
        op_row!(
            M::GET,
            "/v1/audit/export",
            |_| "/v1/audit/export".into(),
            none,
            200
        ),
        Row {
            method: M::POST,
            route: "/v1/tokens",
            path: |_| "/v1/tokens".into(),
            body: |_| Some(json!({"product": "game", "channel": "stable", "peer_id": peer(900)})),
            expect: |w| match w {
                Who::Player => 200,
                Who::Nobody | Who::Revoked => 401,
                // not entitled, or not a player key
                _ => 403,
            },
        },
        Row {
            method: M::POST,
            route: "/v1/announce",
            path: |_| "/v1/announce".into(),
            // The token in the body is the credential: only the player holds one.
            body: |i| Some(announce(&i.player_token)),
            expect: |w| if w == Who::Player { 200 } else { 401 },
        },
        Row {
            method: M::POST,
            route: "/v1/seeds/heartbeat",
            path: |_| "/v1/seeds/heartbeat".into(),
            body: |_| {
                Some(
                    json!({"seed_id": "seed-m", "peer_id": peer(901), "addrs": [],
                    "capacity_bps": 1, "egress_bps": 0, "peers": 0, "free_disk": 0, "releases": []}),
                )
            },
            expect: |w| match w {
                Who::Seed => 200,
                Who::Nobody | Who::Revoked => 401,
                _ => 403,
            },
        },
        op_row!(
            M::GET,
            "/v1/ops/swarms",
            |_| "/v1/ops/swarms".into(),
            none,
            200
        ),
        op_row!(
            M::GET,
            "/v1/ops/seeds",
            |_| "/v1/ops/seeds".into(),
            none,
            200
        ),
        op_row!(
            M::GET,
            "/v1/ops/overview",
            |_| "/v1/ops/overview".into(),
            none,
            200
        ),
        Row {
            method: M::GET,
            route: "/metrics",
            path: |_| "/metrics".into(),
            body: none,
            // Totals for everyone; named series are checked in their own test.
            expect: |_| 200,
        },
        Row {
            method: M::GET,
            route: "/",
            path: |_| "/".into(),
            body: none,
            // The page itself; it signs in with an operator key to read data.
            expect: |_| 200,
        },
    ]
}

/// Operators and the product's own publisher get `ok`; another product's
/// publisher hears 404 (nothing to learn about products not theirs).
fn publisher_of_game(who: Who, ok: u16) -> u16 {
    match who {
        Who::Operator | Who::Publisher => ok,
        Who::OtherPublisher => 404,
        Who::Nobody | Who::Revoked => 401,
        _ => 403,
    }
}

fn announce(token: &str) -> Value {
    json!({"token": token, "listen_addrs": ["/ip4/127.0.0.1/udp/1/quic-v1"], "have": 0,
        "complete": false, "uploaded": 0, "downloaded": 0, "downloaded_from_seeds": 0})
}

async fn setup(t: &Tracker) -> (Ids, Vec<(Who, Option<String>)>) {
    let (publisher, _) = t.product("game", true, &["stable"]).await;
    let (other_publisher, _) = t.product("other", true, &["stable"]).await;
    let player_account = t.account("Player", "SE").await;
    let player = t.key(&player_account, "player").await;
    t.admin(
        "/v1/entitlements",
        json!({"account": player_account, "product": "game"}),
    )
    .await;
    let other_account = t.account("Other player", "SE").await;
    let other_player = t.key(&other_account, "player").await;
    let seed_account = t.account("Seed", "SE").await;
    let seed = t.key(&seed_account, "seed").await;
    let revoked_account = t.account("Former operator", "SE").await;
    let revoked = t
        .admin(
            "/v1/api-keys",
            json!({"account": revoked_account, "role": "operator"}),
        )
        .await;
    t.call(
        Method::DELETE,
        &format!("/v1/api-keys/{}", revoked["id"].as_str().unwrap()),
        Some(&t.operator),
        None,
    )
    .await;
    let org = t
        .admin(
            "/v1/accounts",
            json!({"name": "Org", "country": "SE", "kind": "organisation", "seats": 5}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = t.account("Member", "SE").await;
    let spare_account = t.account("Spare", "SE").await;
    let spare_key = t
        .admin(
            "/v1/api-keys",
            json!({"account": spare_account, "role": "player"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spare_entitlement = t
        .admin(
            "/v1/entitlements",
            json!({"account": spare_account, "product": "other"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, token) = t.token(&player, "game", "stable", &peer(1)).await;
    assert_eq!(s, StatusCode::OK, "{token}");
    let ids = Ids {
        org,
        member,
        spare_account,
        spare_key,
        spare_entitlement,
        release: token["swarm"].as_str().unwrap().to_owned(),
        player_token: token["token"].as_str().unwrap().to_owned(),
    };
    let keys = vec![
        (Who::Nobody, None),
        (Who::Player, Some(player)),
        (Who::OtherPlayer, Some(other_player)),
        (Who::Publisher, Some(publisher)),
        (Who::OtherPublisher, Some(other_publisher)),
        (Who::Seed, Some(seed)),
        (Who::Operator, Some(t.operator.clone())),
        (
            Who::Revoked,
            Some(revoked["key"].as_str().unwrap().to_owned()),
        ),
    ];
    (ids, keys)
}

#[tokio::test]
async fn every_route_answers_every_caller_as_the_table_says() {
    let t = common::start(Config::default()).await;
    let (ids, keys) = setup(&t).await;
    let mut failures = Vec::new();
    for row in rows() {
        // Refused callers first, so a route that changes state is refused
        // before the allowed caller changes it.
        let mut order: Vec<Who> = EVERYONE.to_vec();
        order.sort_by_key(|w| (200..300).contains(&(row.expect)(*w)));
        for who in order {
            let key = keys.iter().find(|(w, _)| *w == who).unwrap().1.as_deref();
            let mut req = t
                .http
                .request(row.method.clone(), format!("{}{}", t.url, (row.path)(&ids)));
            if let Some(k) = key {
                req = req.bearer_auth(k);
            }
            // An announce's credential is the token in its body, which
            // only the player holds; everyone else presents a made-up one.
            let body = if row.route == "/v1/announce" && who != Who::Player {
                Some(announce("00"))
            } else {
                (row.body)(&ids)
            };
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let json_body = resp
                .headers()
                .get("content-type")
                .is_some_and(|v| v.to_str().unwrap_or("").contains("json"));
            let text = resp.text().await.unwrap();
            let expected = (row.expect)(who);
            if status != expected {
                failures.push(format!(
                    "{} {} as {who:?}: {status}, expected {expected}: {text}",
                    row.method, row.route
                ));
            }
            if status >= 400 {
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if !json_body || !v["error"].is_string() || !v["detail"].is_string() {
                    failures.push(format!(
                        "{} {} as {who:?}: {status} without the JSON error body: {text}",
                        row.method, row.route
                    ));
                }
            }
            assert!(
                status < 500,
                "{} {} as {who:?}: {status} {text}",
                row.method,
                row.route
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_route_of_the_router_has_a_row() {
    let table: Vec<(String, String)> = rows()
        .iter()
        .map(|r| (r.method.to_string(), r.route.to_owned()))
        .collect();
    let routes = common::routes_in_source();
    assert!(routes.len() >= 30, "the source scan found only {routes:?}");
    let missing: Vec<_> = routes.iter().filter(|r| !table.contains(r)).collect();
    assert!(
        missing.is_empty(),
        "routes without a row in the matrix: {missing:?}"
    );
    let stale: Vec<_> = table.iter().filter(|r| !routes.contains(r)).collect();
    assert!(
        stale.is_empty(),
        "rows for routes the router lacks: {stale:?}"
    );
}
