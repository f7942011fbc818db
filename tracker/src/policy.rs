//! Who may have a swarm token: export screening, product and channel rules,
//! and entitlements. A pure function of loaded records and `now`, so every
//! rule is unit-tested without a server.

use crate::model::{Account, Entitlement, Product, Role};
use std::collections::HashSet;

/// Export-screening configuration.
#[derive(Debug, Clone, Default)]
pub struct Screening {
    embargoed: HashSet<String>,
    denied: HashSet<String>,
}

/// Folds a party name for matching: lower case, letters and digits only,
/// single spaces (`"ACME, Inc."` matches `"acme inc"`).
pub fn normalise_party(name: &str) -> String {
    let cleaned: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { ' ' })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AccountKind, Channel};

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
                },
                Channel {
                    name: "qa".into(),
                    private: true,
                    allow: vec!["p_allowed".into(), "org_1".into()],
                },
            ],
            publisher_keys: vec![],
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
        assert_eq!(normalise_party("  ACME,   Inc. "), "acme inc");
        assert_eq!(normalise_party("Ünïcode GmbH"), "ünïcode gmbh");
    }
}
