//! Who may have a swarm token: export screening, product and channel rules,
//! and entitlements. A pure function of loaded records and `now`, so every
//! rule is unit-tested without a server.

use crate::model::{Account, Entitlement, Product, Role};
use shoal_api::{Channel, ReleaseRecord};
use std::collections::HashSet;

/// Export-screening configuration.
#[derive(Debug, Clone, Default)]
pub struct Screening {
    embargoed: HashSet<String>,
    denied: HashSet<String>,
}

/// Folds a party name for matching, so spellings of one name meet:
/// compatibility decomposition (full-width letters, ligatures), accents
/// dropped, case folded, dots and apostrophes inside words removed
/// (`A.C.M.E.` is `ACME`), legal forms made uniform (`Corporation` is
/// `Corp`), and every other punctuation and all whitespace removed. So
/// `"A.C.M.E. Corp"`, `"acme-corp"` and `"ＡＣＭＥ Corporation"` all fold to
/// `"acmecorp"`. Screening errs towards matching.
pub fn normalise_party(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization as _;
    use unicode_normalization::char::is_combining_mark;
    let letters: String = name
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .filter(|c| !matches!(c, '.' | '\'' | '\u{2019}'))
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    letters
        .split_whitespace()
        .map(|word| match word {
            "corporation" => "corp",
            "incorporated" => "inc",
            "limited" => "ltd",
            "company" => "co",
            other => other,
        })
        .collect()
}

impl Screening {
    /// `embargoed`: ISO country codes; `denied`: party names or account ids.
    pub fn new(embargoed: &[String], denied: &[String]) -> Screening {
        Screening {
            embargoed: embargoed
                .iter()
                .map(|c| c.trim().to_ascii_uppercase())
                .collect(),
            denied: denied
                .iter()
                .map(|d| normalise_party(d))
                .filter(|d| !d.is_empty())
                .collect(),
        }
    }

    fn embargoed(&self, account: &Account) -> bool {
        self.embargoed
            .contains(&account.country.to_ascii_uppercase())
    }

    fn denied(&self, account: &Account) -> bool {
        self.denied.contains(&normalise_party(&account.name))
            || self.denied.contains(&normalise_party(&account.id))
    }
}

/// Why a token was refused. Each has a stable code for the API and the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    WrongRole,
    EmbargoedCountry,
    DeniedParty,
    UnknownProduct,
    UnknownChannel,
    NoRelease,
    NotOnAllowList,
    NotEntitled,
    EntitlementExpired,
    EntitlementRevoked,
    /// The account already holds live tokens for the most peer identities
    /// it may use at once.
    TooManyPeers,
    /// An encrypted release whose preload window has not opened yet.
    PreloadNotOpen,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Refusal::WrongRole => "wrong_role",
            Refusal::EmbargoedCountry => "embargoed_country",
            Refusal::DeniedParty => "denied_party",
            Refusal::UnknownProduct => "unknown_product",
            Refusal::UnknownChannel => "unknown_channel",
            Refusal::NoRelease => "no_release",
            Refusal::NotOnAllowList => "not_on_allow_list",
            Refusal::NotEntitled => "not_entitled",
            Refusal::EntitlementExpired => "entitlement_expired",
            Refusal::EntitlementRevoked => "entitlement_revoked",
            Refusal::TooManyPeers => "too_many_peers",
            Refusal::PreloadNotOpen => "preload_not_open",
        }
    }

    /// HTTP status: 404 for things that do not exist, 403 otherwise.
    pub fn status(self) -> u16 {
        match self {
            Refusal::UnknownProduct | Refusal::UnknownChannel | Refusal::NoRelease => 404,
            _ => 403,
        }
    }

    pub fn detail(self) -> &'static str {
        match self {
            Refusal::WrongRole => "swarm tokens are issued to player API keys only",
            Refusal::EmbargoedCountry => {
                "refused by export screening: the account's country is under embargo"
            }
            Refusal::DeniedParty => {
                "refused by export screening: the account is on the denied-party list"
            }
            Refusal::UnknownProduct => "no such product",
            Refusal::UnknownChannel => "the product has no such channel",
            Refusal::NoRelease => "the channel has no release yet",
            Refusal::NotOnAllowList => {
                "the channel is private and the account is not on its allow-list"
            }
            Refusal::NotEntitled => "the account has no entitlement to this product and channel",
            Refusal::EntitlementExpired => "the account's entitlement to this product has expired",
            Refusal::EntitlementRevoked => "the account's entitlement to this product was revoked",
            Refusal::TooManyPeers => {
                "the account holds live tokens for as many launchers (peer ids) as it may use at once; stop one or wait for its token to expire"
            }
            Refusal::PreloadNotOpen => {
                "the release is encrypted and its preload has not opened yet"
            }
        }
    }
}

/// Why a token was issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    FreeProduct,
    Entitled,
    /// Entitled through the account's organisation seat.
    OrgSeat,
}

impl Grant {
    pub fn code(self) -> &'static str {
        match self {
            Grant::FreeProduct => "free_product",
            Grant::Entitled => "entitled",
            Grant::OrgSeat => "org_seat",
        }
    }
}

/// Everything the decision needs, loaded by the caller.
#[derive(Debug)]
pub struct TokenRequest<'a> {
    pub role: Role,
    pub account: &'a Account,
    /// The organisation the account holds a seat in, if any.
    pub org: Option<&'a Account>,
    pub product: Option<&'a Product>,
    pub channel: &'a str,
    pub has_release: bool,
    /// Entitlements of the account.
    pub own: &'a [Entitlement],
    /// Entitlements of its organisation.
    pub org_grants: &'a [Entitlement],
    pub now: u64,
}

pub use shoal_api::budget::{budget_share, seeds_fill};

/// What a granted token admits to, for a release at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A plain release: the swarm, as always.
    Open,
    /// An encrypted release that has unlocked: the swarm and its content key.
    Unlocked,
    /// An encrypted release before its unlock: the swarm (ciphertext) only;
    /// the time it unlocks, if scheduled.
    Preload { unlocks_at: Option<u64> },
}

/// When an encrypted release's preload opens: its channel's window before
/// `unlock_at` (`None` when no unlock is scheduled: open now).
pub fn preload_opens_at(release: &ReleaseRecord, channel: &Channel) -> Option<u64> {
    let days = channel
        .preload_days
        .unwrap_or(shoal_api::DEFAULT_PRELOAD_DAYS);
    release
        .unlock_at
        .map(|t| t.saturating_sub(u64::from(days) * 86_400))
}

/// Whether `release` plays at `now`: plain, or encrypted, unlocked and
/// its key stored.
pub fn playable(release: &ReleaseRecord, now: u64) -> bool {
    release.key_check.is_none()
        || (release.key_stored && release.unlock_at.is_some_and(|t| t <= now))
}

/// How many of a channel's newest releases a request for something to play
/// looks through for one that plays: encrypted releases scheduled ahead of
/// the playable one are few.
pub const LOCKED_AHEAD: usize = 16;

/// For a request that wants something to play, from a channel's newest
/// releases (newest first, as many as [`LOCKED_AHEAD`]): the newest that
/// plays at `now`, and the newest locked one above it (what is coming).
/// With none playable among them, the newest (to preload) and nothing
/// coming.
pub fn pick_playable(
    newest_first: &[ReleaseRecord],
    now: u64,
) -> (Option<&ReleaseRecord>, Option<&ReleaseRecord>) {
    match newest_first.iter().position(|r| playable(r, now)) {
        Some(0) => (newest_first.first(), None),
        Some(i) => (newest_first.get(i), newest_first.first()),
        None => (newest_first.first(), None),
    }
}

/// What an entitled account's token admits to at `now`. The tracker's
/// clock decides, never the launcher's: the key is handed out from
/// `unlock_at` on, and only once it is stored.
pub fn access(release: &ReleaseRecord, channel: &Channel, now: u64) -> Result<Access, Refusal> {
    if release.key_check.is_none() {
        return Ok(Access::Open);
    }
    if playable(release, now) {
        return Ok(Access::Unlocked);
    }
    match preload_opens_at(release, channel) {
        Some(opens) if now < opens => Err(Refusal::PreloadNotOpen),
        _ => Ok(Access::Preload {
            unlocks_at: release.unlock_at,
        }),
    }
}

/// How a matching entitlement stands at `now`.
fn standing(e: &Entitlement, now: u64) -> Result<(), Refusal> {
    if e.revoked_at.is_some_and(|t| t <= now) {
        return Err(Refusal::EntitlementRevoked);
    }
    if e.expires_at.is_some_and(|t| t <= now) {
        return Err(Refusal::EntitlementExpired);
    }
    Ok(())
}

/// Decides a token request. Screening comes first: an embargoed or denied
/// account learns nothing about products.
pub fn decide(req: &TokenRequest<'_>, screening: &Screening) -> Result<Grant, Refusal> {
    if req.role != Role::Player {
        return Err(Refusal::WrongRole);
    }
    let parties = std::iter::once(req.account).chain(req.org);
    for party in parties {
        if screening.embargoed(party) {
            return Err(Refusal::EmbargoedCountry);
        }
        if screening.denied(party) {
            return Err(Refusal::DeniedParty);
        }
    }
    let product = req.product.ok_or(Refusal::UnknownProduct)?;
    let channel = product
        .channel(req.channel)
        .ok_or(Refusal::UnknownChannel)?;
    if channel.private {
        let listed = |a: &Account| channel.allow.contains(&a.id);
        if !listed(req.account) && !req.org.is_some_and(listed) {
            return Err(Refusal::NotOnAllowList);
        }
    }
    if !req.has_release {
        return Err(Refusal::NoRelease);
    }
    if !product.paid {
        return Ok(Grant::FreeProduct);
    }
    let applies = |e: &&Entitlement| {
        e.product == product.id && e.channel.as_deref().is_none_or(|c| c == req.channel)
    };
    // The most informative refusal among matching grants: revoked beats expired.
    let mut refusal = Refusal::NotEntitled;
    for (grants, grant) in [(req.own, Grant::Entitled), (req.org_grants, Grant::OrgSeat)] {
        for e in grants.iter().filter(applies) {
            match standing(e, req.now) {
                Ok(()) => return Ok(grant),
                Err(r) if refusal == Refusal::NotEntitled || r == Refusal::EntitlementRevoked => {
                    refusal = r
                }
                Err(_) => {}
            }
        }
    }
    Err(refusal)
}

/// The peer identities each account holds live tokens for, so one account
/// (one paid entitlement, one seat) cannot feed any number of launchers.
/// Pure: time is passed in. Holds at most `max` identities per account, and
/// accounts without a live token are dropped by [`Identities::expire`].
#[derive(Debug, Default)]
pub struct Identities {
    /// account → (peer id, expiry of its newest token)
    live: std::collections::HashMap<String, Vec<(String, u64)>>,
}

impl Identities {
    /// Admits `peer` for `account` until `until`, or refuses it when the
    /// account already holds `max` other live identities at `now`. A peer
    /// already admitted is always renewed.
    pub fn admit(
        &mut self,
        account: &str,
        peer: &str,
        now: u64,
        until: u64,
        max: usize,
    ) -> Result<(), Refusal> {
        let held = self.live.entry(account.to_owned()).or_default();
        held.retain(|(_, expires)| *expires > now);
        if let Some(entry) = held.iter_mut().find(|(p, _)| p == peer) {
            entry.1 = entry.1.max(until);
            return Ok(());
        }
        if held.len() >= max {
            return Err(Refusal::TooManyPeers);
        }
        held.push((peer.to_owned(), until));
        Ok(())
    }

    /// Forgets `peer` (it announced that it stopped).
    pub fn release(&mut self, account: &str, peer: &str) {
        if let Some(held) = self.live.get_mut(account) {
            held.retain(|(p, _)| p != peer);
        }
    }

    /// Drops expired identities and accounts left with none.
    pub fn expire(&mut self, now: u64) {
        self.live.retain(|_, held| {
            held.retain(|(_, expires)| *expires > now);
            !held.is_empty()
        });
    }
}

/// Token requests per API key: a token bucket of `per_minute` requests that
/// refills continuously. Pure: time (milliseconds) is passed in. Keys idle
/// for a full refill are dropped by [`RateLimit::expire`], so the map holds
/// only keys active in the last minute.
#[derive(Debug, Default)]
pub struct RateLimit {
    /// key id → (tokens left, at this time in ms)
    buckets: std::collections::HashMap<String, (f64, u64)>,
}

impl RateLimit {
    /// Takes one request for `key` at `now_ms`; `Err(seconds)` says how long
    /// until the next request would be allowed.
    pub fn take(&mut self, key: &str, now_ms: u64, per_minute: u32) -> Result<(), u64> {
        let capacity = f64::from(per_minute.max(1));
        let rate_per_ms = capacity / 60_000.0;
        let (tokens, at) = self
            .buckets
            .entry(key.to_owned())
            .or_insert((capacity, now_ms));
        *tokens = (*tokens + now_ms.saturating_sub(*at) as f64 * rate_per_ms).min(capacity);
        *at = now_ms.max(*at);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - *tokens) / rate_per_ms) / 1000.0).ceil() as u64)
        }
    }

    /// Drops buckets that have been full again for a while.
    pub fn expire(&mut self, now_ms: u64) {
        self.buckets
            .retain(|_, (_, at)| now_ms.saturating_sub(*at) < 60_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountKind;

    #[test]
    fn identities_are_bounded_per_account_and_expire() {
        let mut ids = Identities::default();
        assert_eq!(ids.admit("a", "p1", 0, 100, 2), Ok(()));
        assert_eq!(ids.admit("a", "p2", 0, 100, 2), Ok(()));
        assert_eq!(ids.admit("a", "p3", 10, 110, 2), Err(Refusal::TooManyPeers));
        // another account is not affected; a known peer always renews
        assert_eq!(ids.admit("b", "p3", 10, 110, 2), Ok(()));
        assert_eq!(ids.admit("a", "p1", 50, 150, 2), Ok(()));
        // p2's token expires at 100: p3 may come in
        assert_eq!(ids.admit("a", "p3", 100, 200, 2), Ok(()));
        // a stopped peer frees its place at once
        ids.release("a", "p1");
        assert_eq!(ids.admit("a", "p4", 101, 201, 2), Ok(()));
        ids.expire(1000);
        assert!(ids.live.is_empty());
    }

    #[test]
    fn rate_limit_refills_and_says_when() {
        let mut r = RateLimit::default();
        for _ in 0..60 {
            assert_eq!(r.take("k", 0, 60), Ok(()));
        }
        assert_eq!(r.take("k", 0, 60), Err(1));
        assert_eq!(r.take("other", 0, 60), Ok(()));
        // one request per second refills
        assert_eq!(r.take("k", 1000, 60), Ok(()));
        assert!(r.take("k", 1000, 60).is_err());
        // a clock going backwards never grants extra requests
        assert!(r.take("k", 500, 60).is_err());
        r.expire(70_000);
        assert!(r.buckets.is_empty());
    }

    fn account(id: &str, country: &str) -> Account {
        Account {
            id: id.into(),
            name: format!("Player {id}"),
            kind: AccountKind::Individual,
            country: country.into(),
            seats: 0,
            members: vec![],
            org: None,
            created_at: 0,
        }
    }

    fn product(paid: bool) -> Product {
        Product {
            id: "game".into(),
            name: "Game".into(),
            paid,
            channels: vec![
                Channel {
                    name: "stable".into(),
                    private: false,
                    allow: vec![],
                    origin_budget: None,
                    preload_days: None,
                },
                Channel {
                    name: "qa".into(),
                    private: true,
                    allow: vec!["p_allowed".into(), "org_1".into()],
                    origin_budget: None,
                    preload_days: None,
                },
            ],
            publisher_keys: vec![],
            publishers: vec![],
            created_at: 0,
        }
    }

    fn grant(
        account: &str,
        channel: Option<&str>,
        expires: Option<u64>,
        revoked: Option<u64>,
    ) -> Entitlement {
        Entitlement {
            id: "e".into(),
            account: account.into(),
            product: "game".into(),
            channel: channel.map(Into::into),
            expires_at: expires,
            granted_at: 0,
            revoked_at: revoked,
        }
    }

    struct Case {
        name: &'static str,
        role: Role,
        account: Account,
        org: Option<Account>,
        product: Option<Product>,
        channel: &'static str,
        own: Vec<Entitlement>,
        org_grants: Vec<Entitlement>,
        expected: Result<Grant, Refusal>,
    }

    fn case(name: &'static str, expected: Result<Grant, Refusal>) -> Case {
        Case {
            name,
            role: Role::Player,
            account: account("p1", "FR"),
            org: None,
            product: Some(product(true)),
            channel: "stable",
            own: vec![],
            org_grants: vec![],
            expected,
        }
    }

    #[test]
    fn decisions() {
        let screening = Screening::new(
            &["KP".into(), "ir".into()],
            &["ACME, Inc.".into(), "p_banned".into()],
        );
        let mut org = account("org_1", "DE");
        org.kind = AccountKind::Organisation;
        let cases = vec![
            Case {
                own: vec![grant("p1", None, None, None)],
                ..case("entitled", Ok(Grant::Entitled))
            },
            case("not entitled", Err(Refusal::NotEntitled)),
            Case {
                product: Some(product(false)),
                ..case("free product", Ok(Grant::FreeProduct))
            },
            Case {
                own: vec![grant("p1", None, Some(50), None)],
                ..case("expired", Err(Refusal::EntitlementExpired))
            },
            Case {
                own: vec![grant("p1", None, Some(500), None)],
                ..case("not yet expired", Ok(Grant::Entitled))
            },
            Case {
                own: vec![grant("p1", None, None, Some(10))],
                ..case("revoked", Err(Refusal::EntitlementRevoked))
            },
            Case {
                own: vec![
                    grant("p1", None, None, Some(10)),
                    grant("p1", None, None, None),
                ],
                ..case("revoked and re-granted", Ok(Grant::Entitled))
            },
            Case {
                own: vec![grant("p1", Some("beta"), None, None)],
                ..case("other channel only", Err(Refusal::NotEntitled))
            },
            Case {
                org: Some(org.clone()),
                org_grants: vec![grant("org_1", None, None, None)],
                ..case("org seat", Ok(Grant::OrgSeat))
            },
            Case {
                org: Some(org.clone()),
                ..case("org without grant", Err(Refusal::NotEntitled))
            },
            Case {
                own: vec![grant("p1", None, None, None)],
                account: account("p1", "kp"),
                ..case("embargoed", Err(Refusal::EmbargoedCountry))
            },
            Case {
                own: vec![grant("p1", None, None, None)],
                org: Some(account("org_x", "IR")),
                ..case("embargoed org", Err(Refusal::EmbargoedCountry))
            },
            Case {
                own: vec![grant("p1", None, None, None)],
                account: Account {
                    name: "acme inc".into(),
                    ..account("p1", "FR")
                },
                ..case("denied party by name", Err(Refusal::DeniedParty))
            },
            Case {
                product: Some(product(false)),
                account: account("p_banned", "FR"),
                ..case("denied party by id", Err(Refusal::DeniedParty))
            },
            Case {
                channel: "qa",
                product: Some(product(false)),
                ..case("private, not listed", Err(Refusal::NotOnAllowList))
            },
            Case {
                channel: "qa",
                product: Some(product(false)),
                account: account("p_allowed", "FR"),
                ..case("private, listed", Ok(Grant::FreeProduct))
            },
            Case {
                channel: "qa",
                product: Some(product(false)),
                org: Some(org.clone()),
                ..case("private, org listed", Ok(Grant::FreeProduct))
            },
            Case {
                role: Role::Seed,
                own: vec![grant("p1", None, None, None)],
                ..case("wrong role", Err(Refusal::WrongRole))
            },
            Case {
                role: Role::Publisher,
                ..case("publisher role", Err(Refusal::WrongRole))
            },
            Case {
                product: None,
                ..case("unknown product", Err(Refusal::UnknownProduct))
            },
            Case {
                channel: "nightly",
                ..case("unknown channel", Err(Refusal::UnknownChannel))
            },
        ];
        for c in &cases {
            let req = TokenRequest {
                role: c.role,
                account: &c.account,
                org: c.org.as_ref(),
                product: c.product.as_ref(),
                channel: c.channel,
                has_release: true,
                own: &c.own,
                org_grants: &c.org_grants,
                now: 100,
            };
            assert_eq!(decide(&req, &screening), c.expected, "case {:?}", c.name);
        }
    }

    #[test]
    fn no_release_after_access_checks() {
        let p = product(false);
        let a = account("p1", "FR");
        let req = TokenRequest {
            role: Role::Player,
            account: &a,
            org: None,
            product: Some(&p),
            channel: "stable",
            has_release: false,
            own: &[],
            org_grants: &[],
            now: 0,
        };
        assert_eq!(decide(&req, &Screening::default()), Err(Refusal::NoRelease));
    }

    #[test]
    fn party_names_fold() {
        let check =
            |name: &str, folded: &str| assert_eq!(normalise_party(name), folded, "{name:?}");
        check("  ACME,   Inc. ", "acmeinc");
        check("Ünïcode GmbH", "unicodegmbh");
        check("", "");
        check("...", "");
    }

    #[test]
    fn every_spelling_of_a_denied_party_is_refused() {
        let screening = Screening::new(&[], &["ACME Corp".into(), "Bad Actor Ltd".into()]);
        let named = |name: &str| Account {
            name: name.into(),
            ..account("p1", "SE")
        };
        for spelling in [
            "ACME Corp",
            "acme corp",
            "A.C.M.E. Corp",
            "A.C.M.E. Corp.",
            "ACME, Corp.",
            "ACME-Corp",
            "ACMECorp",
            "  acme   CORP  ",
            "ACME\tCorp",
            "ACME Corporation",
            "ÀCMÉ Corp",
            "ＡＣＭＥ Ｃｏｒｐ",
            "A C M E Corp",
            "Acme_Corp",
            "ACME (Corp)",
            "Bad Actor Limited",
            "bad-actor ltd.",
            "B.A.D. Actor, Ltd",
        ] {
            assert!(
                screening.denied(&named(spelling)),
                "{spelling:?} passed screening"
            );
        }
        for other in [
            "ACME Corp Two",
            "Acne Corp",
            "Good Actor Ltd",
            "Corp ACME Holdings",
        ] {
            assert!(!screening.denied(&named(other)), "{other:?} was refused");
        }
    }

    fn sealed(unlock_at: Option<u64>, key_stored: bool) -> ReleaseRecord {
        ReleaseRecord {
            id: shoal_types::Hash([1; 32]),
            product: "game".into(),
            channel: "stable".into(),
            version: 1,
            manifest_hash: shoal_types::Hash([2; 32]),
            total_size: 10,
            publisher: shoal_types::SecretKey::from_seed([3; 32]).public(),
            label: "1.0".into(),
            published_at: 0,
            origin_budget: shoal_api::OriginBudget::default(),
            patch_bytes: None,
            key_check: Some(shoal_types::Hash([4; 32])),
            key_stored,
            unlock_at,
        }
    }

    #[test]
    fn an_encrypted_release_preloads_in_its_window_and_unlocks_at_its_time() {
        let day = 86_400;
        let mut channel = product(true).channels[0].clone();
        let t = 100 * day;
        let release = sealed(Some(t), true);
        // before the default window (7 days): refused, with the reason
        assert_eq!(
            access(&release, &channel, t - 7 * day - 1),
            Err(Refusal::PreloadNotOpen)
        );
        assert_eq!(Refusal::PreloadNotOpen.code(), "preload_not_open");
        assert_eq!(preload_opens_at(&release, &channel), Some(t - 7 * day));
        for now in [t - 7 * day, t - 1] {
            assert_eq!(
                access(&release, &channel, now),
                Ok(Access::Preload {
                    unlocks_at: Some(t)
                })
            );
        }
        assert_eq!(access(&release, &channel, t), Ok(Access::Unlocked));
        // the channel's own window
        channel.preload_days = Some(1);
        assert_eq!(
            access(&release, &channel, t - 2 * day),
            Err(Refusal::PreloadNotOpen)
        );
        // no key stored: never unlocked, whatever the time
        assert_eq!(
            access(&sealed(Some(t), false), &channel, t + 5),
            Ok(Access::Preload {
                unlocks_at: Some(t)
            })
        );
        // not scheduled: preload, no unlock
        assert_eq!(
            access(&sealed(None, true), &channel, 0),
            Ok(Access::Preload { unlocks_at: None })
        );
        // a plain release is open
        let mut plain = sealed(None, false);
        plain.key_check = None;
        assert_eq!(access(&plain, &channel, 0), Ok(Access::Open));
    }

    #[test]
    fn a_request_to_play_gets_the_newest_playable_release_and_hears_what_is_coming() {
        let t = 1_000;
        let release = |version, key: Option<(Option<u64>, bool)>| {
            let mut r = sealed(None, false);
            r.version = version;
            match key {
                None => r.key_check = None,
                Some((unlock_at, stored)) => (r.unlock_at, r.key_stored) = (unlock_at, stored),
            }
            r
        };
        let v1 = release(1, None);
        let v2 = release(2, Some((Some(t), true)));
        let v3 = release(3, Some((Some(t + 10), true)));
        let version = |r: Option<&ReleaseRecord>| r.map(|r| r.version);
        // v2 and v3 locked: v1 plays, v3 is what comes
        let list = [v3.clone(), v2.clone(), v1.clone()];
        let (play, next) = pick_playable(&list, t - 1);
        assert_eq!((version(play), version(next)), (Some(1), Some(3)));
        // v2 unlocked at t: it plays
        let (play, next) = pick_playable(&list, t);
        assert_eq!((version(play), version(next)), (Some(2), Some(3)));
        // everything unlocked: the newest, nothing coming
        let (play, next) = pick_playable(&list, t + 10);
        assert_eq!((version(play), version(next)), (Some(3), None));
        // scheduled but the key never stored: still locked
        let unstored = [release(2, Some((Some(t), false))), v1.clone()];
        let (play, _) = pick_playable(&unstored, t + 5);
        assert_eq!(version(play), Some(1));
        // nothing playable: the newest, to preload
        let locked = [v3.clone(), v2.clone()];
        let (play, next) = pick_playable(&locked, t - 1);
        assert_eq!((version(play), version(next)), (Some(3), None));
        assert_eq!(pick_playable(&[], t), (None, None));
        assert!(playable(&v1, 0) && !playable(&v2, t - 1) && playable(&v2, t));
    }
}
