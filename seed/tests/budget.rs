//! A seed's ledger of its origin budget: what it sends is counted per
//! swarm (for its heartbeat), and the share the tracker answers decides
//! whether a chunk may go again.

#![allow(clippy::unwrap_used)]

use shoal_net::{Budget, ChunkSource};
use shoal_types::Hash;

#[test]
fn a_seed_spends_its_share_and_keeps_enough_for_first_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let published = shoal_testkit::publish(tmp.path(), &[("a.pak", 600_000, 1)]);
    let release = Hash::of(b"release");
    let data = tmp.path().join("seed");
    shoal_seed::import(&data, &published.bundle, release).unwrap();
    let releases = shoal_seed::Releases::open(&data).unwrap();
    let lens: Vec<u64> = published
        .manifest
        .chunks
        .iter()
        .map(|c| u64::from(c.len))
        .collect();
    assert!(lens.len() >= 3, "{} chunks", lens.len());
    let payload: u64 = lens.iter().sum();

    assert_eq!(
        releases.budget(&release, 0),
        Budget::Window,
        "no share heard yet"
    );
    assert!(releases.sent_by_swarm().is_empty());
    // A share of one copy plus chunk 0 once more.
    releases.allow(&release, Some(payload + lens[0]));
    assert_eq!(releases.budget(&release, 0), Budget::Spare);
    releases.promised(&release, 0);
    releases.chunk(&release, 0).unwrap();
    assert_eq!(
        releases.budget(&release, 0),
        Budget::Spare,
        "the repeat still fits"
    );
    releases.promised(&release, 0);
    releases.chunk(&release, 0).unwrap();
    assert_eq!(
        releases.budget(&release, 0),
        Budget::Spent,
        "what is left is for the chunks not sent yet"
    );
    let sent = releases.sent_by_swarm();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].release, sent[0].bytes), (release, 2 * lens[0]));
    releases.allow(&release, None);
    assert_eq!(releases.budget(&release, 1), Budget::Spare, "unlimited");
    // A swarm it does not serve has no ledger.
    releases.allow(&Hash::of(b"other"), Some(1));
    assert_eq!(releases.budget(&Hash::of(b"other"), 0), Budget::Window);
    assert_eq!(releases.sent_by_swarm().len(), 1);
}
