//! Swarm membership and seed registry: soft state rebuilt by announces and
//! heartbeats, kept in memory. Pure: time and randomness are passed in.

use serde::{Deserialize, Serialize};
use shoal_types::{Hash, Reachability};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

pub use shoal_types::Rng;

/// What a peer reports on announce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReport {
    pub peer_id: String,
    pub account: String,
    pub addrs: Vec<String>,
    pub region: Option<String>,
    pub have: u64,
    pub complete: bool,
    pub uploaded: u64,
    pub downloaded: u64,
    pub downloaded_from_seeds: u64,
    /// Whether others can dial it (its AutoNAT verdict).
    pub reachability: Reachability,
    /// The address its announce came from. Members that share one sit
    /// behind the same router (a household, an office, a LAN café): they
    /// reach each other on their LAN, so the site's uplink carries the
    /// build about once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<IpAddr>,
}

impl PeerReport {
    /// Whether any peer can reach it: directly, or through a relay it holds
    /// a slot on (a `…/p2p-circuit` address) to hole punch from there.
    /// A peer behind a NAT without one can only dial out.
    fn dialable(&self) -> bool {
        !self.addrs.is_empty() && (self.reachability != Reachability::Private || self.has_circuit())
    }

    pub fn has_circuit(&self) -> bool {
        self.addrs.iter().any(|a| a.contains("/p2p-circuit"))
    }

    /// Whether `self` and `other` announced from the same address.
    fn same_site(&self, other: &PeerReport) -> bool {
        self.site.is_some() && self.site == other.site
    }
}

/// Members reachable directly come first in every peer list, those not yet
/// probed next, and those behind NATs (reached through a relay, then a hole
/// punch) last: a player behind a NAT gets sources it can actually dial,
/// and the punches, which can fail, are the fallback.
fn reach_rank(r: Reachability) -> u8 {
    match r {
        Reachability::Public => 0,
        Reachability::Unknown => 1,
        Reachability::Private => 2,
    }
}

#[derive(Debug, Clone)]
struct Member {
    report: PeerReport,
    last_seen: u64,
    /// This member as a JSON [`PeerInfo`], made once per announce and shared
    /// by every peer list it appears in.
    listing: Arc<str>,
}

impl Member {
    fn new(report: PeerReport, last_seen: u64) -> Member {
        let listing = serde_json::to_string(&Member::info(&report, false))
            .expect("peer info serialises")
            .into();
        Member {
            report,
            last_seen,
            listing,
        }
    }

    /// A member as others see it. A member that announces from a public
    /// address and lists LAN ones (RFC 1918 and the like) has them behind
    /// its router: nobody outside its site can reach them (and dialling
    /// them from elsewhere could even reach a stranger's host on the
    /// dialler's own LAN), so only its own site gets them; others get its
    /// public and relayed addresses. Peers on one LAN that the tracker
    /// cannot pair find each other by mDNS. Where the announces come from a
    /// LAN address (a network of private addresses, like the lab's), every
    /// address is listed.
    fn info(report: &PeerReport, same_site: bool) -> PeerInfo {
        let hide_lan = !same_site && report.site.is_some_and(|site| !is_lan_ip(site));
        PeerInfo {
            peer_id: report.peer_id.clone(),
            addrs: report
                .addrs
                .iter()
                .filter(|a| !(hide_lan && is_lan_addr(a) && !a.contains("/p2p-circuit")))
                .cloned()
                .collect(),
            seed: false,
            reachability: report.reachability,
            same_site,
            fills: false,
        }
    }
}

pub use shoal_api::{PeerInfo, SeedReport, SwarmStats};

/// Members' reports summed into their swarm's totals, and taken out again.
trait Totals {
    fn add(&mut self, r: &PeerReport);
    fn sub(&mut self, r: &PeerReport);
}

impl Totals for SwarmStats {
    fn add(&mut self, r: &PeerReport) {
        self.peers += 1;
        self.unreachable += usize::from(r.reachability == Reachability::Private);
        self.complete += usize::from(r.complete);
        self.have_chunks = self.have_chunks.saturating_add(r.have);
        self.uploaded = self.uploaded.saturating_add(r.uploaded);
        self.downloaded = self.downloaded.saturating_add(r.downloaded);
        self.downloaded_from_seeds = self
            .downloaded_from_seeds
            .saturating_add(r.downloaded_from_seeds);
    }

    fn sub(&mut self, r: &PeerReport) {
        self.peers -= 1;
        self.unreachable -= usize::from(r.reachability == Reachability::Private);
        self.complete -= usize::from(r.complete);
        self.have_chunks = self.have_chunks.saturating_sub(r.have);
        self.uploaded = self.uploaded.saturating_sub(r.uploaded);
        self.downloaded = self.downloaded.saturating_sub(r.downloaded);
        self.downloaded_from_seeds = self
            .downloaded_from_seeds
            .saturating_sub(r.downloaded_from_seeds);
    }
}

/// The members of one swarm, with O(1) insert, remove, random pick and
/// aggregates (kept as running totals, not recounted per announce).
#[derive(Debug, Default)]
pub struct Swarm {
    members: Vec<Member>,
    index: HashMap<String, usize>,
    /// Members by the address they announce from (see [`PeerReport::site`]).
    sites: HashMap<IpAddr, HashSet<String>>,
    totals: SwarmStats,
}

/// Most members of the requester's own site put in one peer list: they come
/// first, and other sources still get the rest of the list.
const MAX_SAME_SITE: usize = 8;

impl Swarm {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Records an announce.
    pub fn announce(&mut self, now: u64, report: PeerReport) {
        self.totals.add(&report);
        if let Some(site) = report.site {
            self.sites
                .entry(site)
                .or_default()
                .insert(report.peer_id.clone());
        }
        match self.index.get(&report.peer_id) {
            Some(&i) => {
                let member = &mut self.members[i];
                self.totals.sub(&member.report);
                if let Some(old) = member.report.site
                    && member.report.site != report.site
                {
                    forget_site(&mut self.sites, old, &report.peer_id);
                }
                if member.report.addrs == report.addrs
                    && member.report.reachability == report.reachability
                {
                    member.report = report;
                    member.last_seen = now;
                } else {
                    *member = Member::new(report, now);
                }
            }
            None => {
                self.index
                    .insert(report.peer_id.clone(), self.members.len());
                self.members.push(Member::new(report, now));
            }
        }
    }

    /// When `peer_id` last announced (here, or at another replica).
    pub fn last_seen(&self, peer_id: &str) -> Option<u64> {
        self.index.get(peer_id).map(|&i| self.members[i].last_seen)
    }

    /// Removes a peer (it stopped, or its token was refused).
    pub fn remove(&mut self, peer_id: &str) {
        if let Some(i) = self.index.remove(peer_id) {
            let gone = self.members.swap_remove(i);
            self.totals.sub(&gone.report);
            if let Some(site) = gone.report.site {
                forget_site(&mut self.sites, site, peer_id);
            }
            if let Some(moved) = self.members.get(i) {
                self.index.insert(moved.report.peer_id.clone(), i);
            }
        }
    }

    /// Drops peers not seen since `deadline`; returns how many.
    pub fn expire(&mut self, deadline: u64) -> usize {
        let stale: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.last_seen < deadline)
            .map(|m| m.report.peer_id.clone())
            .collect();
        for p in &stale {
            self.remove(p);
        }
        stale.len()
    }

    pub fn stats(&self) -> SwarmStats {
        self.totals.clone()
    }

    /// Up to `max` other members for `me` that can be dialed: those behind
    /// `me`'s own router first (up to [`MAX_SAME_SITE`]; they are reached on
    /// the LAN whatever their reachability), then reachable ones
    /// ([`reach_rank`]), same region first within a rank, then random. Each
    /// comes with whether it shares `me`'s site.
    fn pick_members(
        &self,
        me: &str,
        region: Option<&str>,
        max: usize,
        rng: &mut Rng,
    ) -> Vec<(&Member, bool)> {
        let mine = self.index.get(me).map(|&i| &self.members[i].report);
        let same_site = |m: &Member| mine.is_some_and(|r| r.same_site(&m.report));
        let mut site: Vec<&Member> = mine
            .and_then(|r| r.site)
            .and_then(|ip| self.sites.get(&ip))
            .into_iter()
            .flatten()
            .filter(|p| p.as_str() != me)
            .filter_map(|p| self.index.get(p).map(|&i| &self.members[i]))
            .filter(|m| !m.report.addrs.is_empty())
            .take(MAX_SAME_SITE.min(max))
            .collect();
        let n = self.members.len();
        let eligible = |m: &Member| m.report.peer_id != me && m.report.dialable() && !same_site(m);
        let mut chosen: Vec<&Member> =
            shoal_types::sample::candidates(n, max, rng, |i| eligible(&self.members[i]))
                .into_iter()
                .map(|i| &self.members[i])
                .collect();
        chosen.sort_by_key(|m| {
            (
                reach_rank(m.report.reachability),
                region.is_some() && m.report.region.as_deref() != region,
            )
        });
        chosen.truncate(max - site.len());
        let site_len = site.len();
        site.extend(chosen);
        site.into_iter()
            .enumerate()
            .map(|(i, m)| (m, i < site_len))
            .collect()
    }

    /// Up to `max` other peers for `me`, same region first, as [`PeerInfo`].
    pub fn pick(&self, me: &str, region: Option<&str>, max: usize, rng: &mut Rng) -> Vec<PeerInfo> {
        self.pick_members(me, region, max, rng)
            .into_iter()
            .map(|(m, same_site)| Member::info(&m.report, same_site))
            .collect()
    }

    /// The same choice as [`Swarm::pick`], as shared JSON fragments: what the
    /// announce hot path splices into its answer without re-serialising.
    pub fn pick_listings(
        &self,
        me: &str,
        region: Option<&str>,
        max: usize,
        rng: &mut Rng,
    ) -> Vec<Arc<str>> {
        self.pick_members(me, region, max, rng)
            .into_iter()
            .map(|(m, same_site)| {
                if same_site {
                    // Few per list: made fresh, not cached.
                    serde_json::to_string(&Member::info(&m.report, true))
                        .expect("peer info serialises")
                        .into()
                } else {
                    Arc::clone(&m.listing)
                }
            })
            .collect()
    }
}

/// Whether a multiaddr's IP is one only a LAN can reach (see [`is_lan_ip`]).
fn is_lan_addr(addr: &str) -> bool {
    addr_ip(addr).is_some_and(is_lan_ip)
}

/// RFC 1918, shared (carrier-grade NAT) and link-local IPv4, unique-local
/// and link-local IPv6. Loopback is not (a node on one machine is its own
/// site).
fn is_lan_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            ip.is_private() || ip.is_link_local() || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(ip) => {
            let first = ip.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// The IP of `/ip4/…` or `/ip6/…` multiaddrs.
fn addr_ip(addr: &str) -> Option<IpAddr> {
    let mut parts = addr.split('/').skip(1);
    match parts.next()? {
        "ip4" | "ip6" => parts.next()?.parse().ok(),
        _ => None,
    }
}

fn forget_site(sites: &mut HashMap<IpAddr, HashSet<String>>, site: IpAddr, peer_id: &str) {
    if let Some(set) = sites.get_mut(&site) {
        set.remove(peer_id);
        if set.is_empty() {
            sites.remove(&site);
        }
    }
}

/// A seed as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedState {
    pub report: SeedReport,
    pub account: String,
    pub last_heartbeat: u64,
    /// Manifest hashes of the releases it holds: seeds hold content, so a
    /// seed holding a build serves every release of that build (a rollback
    /// is a new release of an old manifest).
    pub content: std::collections::HashSet<Hash>,
    /// Chunk bytes it sent to each swarm before it last restarted (its
    /// reports count from its start).
    pub sent_before: HashMap<Hash, u64>,
}

impl SeedState {
    /// Chunk bytes it sent to swarm `release`, restarts included.
    pub fn sent(&self, release: &Hash) -> u64 {
        let now = self
            .report
            .sent
            .iter()
            .find(|s| s.release == *release)
            .map_or(0, |s| s.bytes);
        now + self.sent_before.get(release).copied().unwrap_or(0)
    }

    pub fn utilisation(&self) -> f64 {
        if self.report.capacity_bps == 0 {
            1.0
        } else {
            self.report.egress_bps as f64 / self.report.capacity_bps as f64
        }
    }

    pub fn stale(&self, now: u64, timeout: u64) -> bool {
        now.saturating_sub(self.last_heartbeat) > timeout
    }
}

/// Why a heartbeat was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedRefusal {
    #[error("seed id {0:?} belongs to another seed account")]
    Taken(String),
    #[error("this seed account already registers {0} seed ids, the most it may")]
    TooMany(usize),
}

/// The seeds that heartbeat to this tracker. A seed id belongs to the
/// account that first registered it until the seed is forgotten, each
/// account registers at most a bounded number, and seeds silent for long
/// are forgotten, so the registry (and `/metrics`) stays bounded.
#[derive(Debug, Default)]
pub struct Seeds {
    seeds: HashMap<String, SeedState>,
}

impl Seeds {
    /// Records a heartbeat of `account`'s seed, holding the builds `content`.
    pub fn heartbeat(
        &mut self,
        now: u64,
        account: &str,
        report: SeedReport,
        content: std::collections::HashSet<Hash>,
        max_per_account: usize,
    ) -> Result<(), SeedRefusal> {
        let mut sent_before = HashMap::new();
        match self.seeds.get(&report.seed_id) {
            Some(known) if known.account != account => {
                return Err(SeedRefusal::Taken(report.seed_id));
            }
            Some(known) => {
                // A count that went down is a restart: what it counted
                // before still came out of the budget.
                sent_before = known.sent_before.clone();
                for old in &known.report.sent {
                    let new = report.sent.iter().find(|s| s.release == old.release);
                    if new.is_none_or(|n| n.bytes < old.bytes) {
                        *sent_before.entry(old.release).or_default() += old.bytes;
                    }
                }
                // Bounded like the report: swarms it holds or reports.
                sent_before.retain(|r, _| {
                    report.releases.contains(r) || report.sent.iter().any(|s| s.release == *r)
                });
            }
            None => {
                let held = self.seeds.values().filter(|s| s.account == account).count();
                if held >= max_per_account {
                    return Err(SeedRefusal::TooMany(held));
                }
            }
        }
        let state = SeedState {
            report,
            account: account.to_owned(),
            last_heartbeat: now,
            content,
            sent_before,
        };
        self.seeds.insert(state.report.seed_id.clone(), state);
        Ok(())
    }

    /// Forgets seeds silent for more than `after` seconds; returns how many.
    pub fn forget(&mut self, now: u64, after: u64) -> usize {
        let before = self.seeds.len();
        self.seeds
            .retain(|_, s| now.saturating_sub(s.last_heartbeat) <= after);
        before - self.seeds.len()
    }

    pub fn all(&self) -> impl Iterator<Item = &SeedState> {
        self.seeds.values()
    }

    pub fn get(&self, seed_id: &str) -> Option<&SeedState> {
        self.seeds.get(seed_id)
    }

    /// Chunk bytes every seed known sent to swarm `release`.
    pub fn sent_to(&self, release: &Hash) -> u64 {
        self.seeds.values().map(|s| s.sent(release)).sum()
    }

    /// Fresh seeds holding the build `manifest`, least utilised first.
    pub fn for_content(
        &self,
        manifest: &Hash,
        now: u64,
        timeout: u64,
        max: usize,
    ) -> Vec<&SeedState> {
        let mut seeds: Vec<&SeedState> = self
            .seeds
            .values()
            .filter(|s| {
                !s.stale(now, timeout) && s.content.contains(manifest) && !s.report.addrs.is_empty()
            })
            .collect();
        seeds.sort_by(|a, b| {
            a.utilisation()
                .total_cmp(&b.utilisation())
                .then(a.report.seed_id.cmp(&b.report.seed_id))
        });
        seeds.truncate(max);
        seeds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, region: Option<&str>) -> PeerReport {
        PeerReport {
            peer_id: id.into(),
            account: "a".into(),
            addrs: vec![format!("/ip4/127.0.0.1/udp/1/quic-v1/p2p/{id}")],
            region: region.map(Into::into),
            have: 0,
            complete: false,
            uploaded: 1,
            downloaded: 2,
            downloaded_from_seeds: 1,
            reachability: Reachability::Unknown,
            site: None,
        }
    }

    #[test]
    fn members_behind_the_requesters_router_come_first_even_when_undialable() {
        let home: IpAddr = "203.0.113.7".parse().unwrap();
        let mut s = Swarm::default();
        for i in 0..1000 {
            let mut r = report(&format!("p{i}"), None);
            r.reachability = Reachability::Public;
            r.site = Some(format!("198.51.100.{}", i % 250).parse().unwrap());
            s.announce(0, r);
        }
        // Three players behind one router, none dialable from outside.
        for id in ["h0", "h1", "h2"] {
            let mut r = report(id, None);
            r.reachability = Reachability::Private;
            r.site = Some(home);
            s.announce(0, r);
        }
        let picked = s.pick("h0", None, 30, &mut Rng::new(3));
        assert_eq!(picked.len(), 30);
        let mut firsts: Vec<&str> = picked[..2].iter().map(|p| p.peer_id.as_str()).collect();
        firsts.sort();
        assert_eq!(firsts, ["h1", "h2"]);
        assert!(picked[..2].iter().all(|p| p.same_site));
        assert!(picked[2..].iter().all(|p| !p.same_site));
        // Someone elsewhere never gets them (they cannot be dialed from there).
        let far = s.pick("p5", None, 1000, &mut Rng::new(3));
        assert!(far.iter().all(|p| !p.peer_id.starts_with('h')));
        // A member that moves leaves its old site.
        let mut moved = report("h2", None);
        moved.site = Some("192.0.2.1".parse().unwrap());
        s.announce(1, moved);
        s.remove("h1");
        let picked = s.pick("h0", None, 30, &mut Rng::new(3));
        assert!(picked.iter().all(|p| !p.same_site));
        assert_eq!(s.sites[&home].len(), 1);
    }

    #[test]
    fn lan_addresses_of_members_behind_nats_go_only_to_their_own_site() {
        let home: IpAddr = "203.0.113.7".parse().unwrap();
        let mut s = Swarm::default();
        let circuit = "/ip4/198.51.100.9/udp/4433/quic-v1/p2p/12D3KooWRelay/p2p-circuit";
        for (id, site, reach) in [
            ("h0", home, Reachability::Private),
            ("h1", home, Reachability::Private),
            ("far", "192.0.2.1".parse().unwrap(), Reachability::Private),
            ("pub", "192.0.2.2".parse().unwrap(), Reachability::Public),
        ] {
            let mut r = report(id, None);
            r.reachability = reach;
            r.site = Some(site);
            r.addrs = vec![
                "/ip4/192.168.1.2/udp/4433/quic-v1".into(),
                "/ip4/100.70.0.3/udp/4433/quic-v1".into(),
                "/ip6/fe80::1/udp/4433/quic-v1".into(),
                format!("/ip4/{site}/udp/4433/quic-v1"),
                circuit.into(),
            ];
            s.announce(0, r);
        }
        let addrs = |s: &Swarm, me: &str, of: &str| {
            s.pick(me, None, 10, &mut Rng::new(1))
                .into_iter()
                .find(|p| p.peer_id == of)
                .map(|p| p.addrs)
                .unwrap_or_default()
        };
        assert_eq!(
            addrs(&s, "h0", "h1").len(),
            5,
            "its own site gets everything"
        );
        assert_eq!(
            addrs(&s, "far", "h1"),
            ["/ip4/203.0.113.7/udp/4433/quic-v1", circuit],
            "another site gets the public and relayed ones"
        );
        assert_eq!(
            addrs(&s, "h0", "pub").len(),
            2,
            "nor does a public one's (its own site gets them)"
        );
        let listings = s.pick_listings("far", None, 10, &mut Rng::new(1));
        assert!(
            listings.iter().all(|l| !l.contains("192.168.")),
            "{listings:?}"
        );
        // Announcing from a LAN address (a network of private addresses,
        // like the lab's) hides nothing, circuits through a relay on a LAN
        // address included; nor does announcing from nowhere known.
        for (site, listed) in [(Some("10.0.0.1"), 3), (None, 3), (Some("198.51.100.1"), 1)] {
            let mut r = report("lab", None);
            r.reachability = Reachability::Private;
            r.site = site.map(|a| a.parse().unwrap());
            r.addrs = vec![
                "/ip4/10.0.0.5/udp/4433/quic-v1".into(),
                "/ip4/10.0.0.1/udp/4433/quic-v1".into(),
                "/ip4/10.0.0.2/udp/4433/quic-v1/p2p/12D3KooWRelay/p2p-circuit".into(),
            ];
            s.announce(0, r);
            let got = addrs(&s, "far", "lab");
            assert_eq!(got.len(), listed, "{site:?}: {got:?}");
            assert!(got.iter().any(|a| a.contains("p2p-circuit")), "{site:?}");
        }
        assert!(is_lan_addr("/ip4/10.250.0.3/udp/1/quic-v1"));
        assert!(!is_lan_addr("/ip4/127.0.0.1/udp/1/quic-v1"));
        assert!(!is_lan_addr("/ip4/100.128.0.1/udp/1/quic-v1"));
        assert!(is_lan_addr("/ip6/fd00::1/udp/1/quic-v1"));
        assert!(!is_lan_addr("/ip6/2001:db8::1/udp/1/quic-v1"));
        assert!(!is_lan_addr("garbage"));
    }

    #[test]
    fn announce_update_remove_expire() {
        let mut s = Swarm::default();
        for i in 0..10 {
            s.announce(100, report(&format!("p{i}"), None));
        }
        s.announce(130, report("p3", None)); // update, not a new member
        assert_eq!(s.len(), 10);
        assert_eq!(s.stats().peers, 10);
        assert_eq!(
            s.stats().uploaded,
            10,
            "an update replaces, not adds to, the totals"
        );
        s.remove("p0");
        assert_eq!(s.len(), 9);
        assert_eq!(s.expire(101), 8, "only p3 was seen after 101");
        assert_eq!(s.len(), 1);
        assert_eq!(s.stats().uploaded, 1);
        assert_eq!(s.stats().peers, 1);
    }

    #[test]
    fn a_large_swarm_lists_reachable_members_first_and_never_undialable_ones() {
        let mut s = Swarm::default();
        for i in 0..1000 {
            let mut r = report(&format!("p{i}"), None);
            r.reachability = match i % 4 {
                0 => Reachability::Public,
                1 => Reachability::Unknown,
                _ => Reachability::Private,
            };
            if i % 4 == 3 {
                r.addrs.push(format!(
                    "/ip4/1.2.3.4/udp/1/quic-v1/p2p/R/p2p-circuit/p2p/p{i}"
                ));
            }
            s.announce(0, r);
        }
        assert_eq!(s.stats().unreachable, 500);
        let picked = s.pick("me", None, 30, &mut Rng::new(7));
        assert_eq!(picked.len(), 30);
        let ranks: Vec<u8> = picked.iter().map(|p| reach_rank(p.reachability)).collect();
        assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "{ranks:?}");
        assert_eq!(ranks[0], 0, "reachable members come first");
        assert!(picked.iter().all(|p| {
            p.reachability != Reachability::Private
                || p.addrs.iter().any(|a| a.contains("p2p-circuit"))
        }));
        // A member that changes its verdict moves the totals with it.
        let mut r = report("p2", None);
        r.reachability = Reachability::Public;
        s.announce(1, r);
        assert_eq!(s.stats().unreachable, 499);
    }

    #[test]
    fn listings_are_the_peer_info_json() {
        let mut s = Swarm::default();
        s.announce(0, report("a", None));
        s.announce(0, report("b", None));
        let listings = s.pick_listings("a", None, 10, &mut Rng::new(1));
        let info: PeerInfo = serde_json::from_str(&listings[0]).unwrap();
        assert_eq!(info, s.pick("a", None, 10, &mut Rng::new(1))[0]);
        // a changed address is reflected
        let mut moved = report("b", None);
        moved.addrs = vec!["/ip4/127.0.0.2/udp/2/quic-v1".into()];
        s.announce(1, moved.clone());
        let info: PeerInfo =
            serde_json::from_str(&s.pick_listings("a", None, 10, &mut Rng::new(1))[0]).unwrap();
        assert_eq!(info.addrs, moved.addrs);
    }

    #[test]
    fn pick_excludes_self_and_prefers_region() {
        let mut s = Swarm::default();
        for i in 0..200 {
            let region = if i % 10 == 0 { Some("eu") } else { Some("us") };
            s.announce(0, report(&format!("p{i}"), region));
        }
        let mut rng = Rng::new(1);
        let picked = s.pick("p0", Some("eu"), 50, &mut rng);
        assert_eq!(picked.len(), 50);
        assert!(picked.iter().all(|p| p.peer_id != "p0"));
        let unique: std::collections::HashSet<_> = picked.iter().map(|p| &p.peer_id).collect();
        assert_eq!(unique.len(), 50);
        // eu peers come first
        let eu: Vec<bool> = picked
            .iter()
            .map(|p| p.peer_id[1..].parse::<u32>().unwrap() % 10 == 0)
            .collect();
        let first_us = eu.iter().position(|e| !e).unwrap_or(eu.len());
        assert!(
            eu[first_us..].iter().all(|e| !e),
            "region peers first: {eu:?}"
        );
        assert!(first_us >= 5, "some eu peers expected among 150 candidates");
    }

    #[test]
    fn small_swarm_gives_everyone_else() {
        let mut s = Swarm::default();
        for i in 0..5 {
            s.announce(0, report(&format!("p{i}"), None));
        }
        let picked = s.pick("p2", None, 50, &mut Rng::new(3));
        assert_eq!(picked.len(), 4);
    }

    #[test]
    fn seeds_sorted_by_load_and_fresh_only() {
        let mut seeds = Seeds::default();
        let m = Hash::of(b"manifest");
        let content = || std::collections::HashSet::from([m]);
        seeds
            .heartbeat(100, "s", seed("busy", 90), content(), 8)
            .unwrap();
        seeds
            .heartbeat(100, "s", seed("idle", 10), content(), 8)
            .unwrap();
        seeds
            .heartbeat(10, "s", seed("stale", 0), content(), 8)
            .unwrap();
        let picked: Vec<_> = seeds
            .for_content(&m, 100, 30, 5)
            .iter()
            .map(|s| s.report.seed_id.clone())
            .collect();
        assert_eq!(picked, ["idle", "busy"]);
        assert!(
            seeds
                .for_content(&Hash::of(b"other"), 100, 30, 5)
                .is_empty()
        );
    }

    fn seed(id: &str, egress: u64) -> SeedReport {
        SeedReport {
            seed_id: id.into(),
            peer_id: format!("peer-{id}"),
            addrs: vec!["/ip4/127.0.0.1/udp/9/quic-v1".into()],
            capacity_bps: 100,
            egress_bps: egress,
            peers: 0,
            free_disk: 0,
            releases: vec![],
            relay: true,
            sent: vec![],
        }
    }

    #[test]
    fn seed_ids_belong_to_their_account_are_bounded_and_forgotten() {
        let mut seeds = Seeds::default();
        let none = std::collections::HashSet::new;
        seeds.heartbeat(0, "a", seed("s1", 0), none(), 2).unwrap();
        // another account cannot take over s1
        assert_eq!(
            seeds.heartbeat(1, "b", seed("s1", 0), none(), 2),
            Err(SeedRefusal::Taken("s1".into()))
        );
        assert_eq!(seeds.all().next().unwrap().account, "a");
        seeds.heartbeat(1, "a", seed("s2", 0), none(), 2).unwrap();
        // a's third id is refused; its known ids keep heartbeating
        assert_eq!(
            seeds.heartbeat(2, "a", seed("s3", 0), none(), 2),
            Err(SeedRefusal::TooMany(2))
        );
        seeds.heartbeat(50, "a", seed("s2", 0), none(), 2).unwrap();
        // s1 went silent: forgotten after 40 s, and its id is free again
        assert_eq!(seeds.forget(45, 40), 1);
        seeds.heartbeat(46, "b", seed("s1", 0), none(), 2).unwrap();
        assert_eq!(seeds.all().count(), 2);
    }
}
