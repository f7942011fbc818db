//! `shoal ops status`: the tracker's swarm and seed views and its alerts,
//! as tables or JSON.

use crate::cli::{OpsArgs, OpsTopCommand};
use crate::{Exit, human, with_exit};
use anyhow::Context as _;
use shoal_api::{Alert, Overview, SwarmView};
use std::time::Duration;

pub(crate) fn run(args: &OpsArgs) -> anyhow::Result<()> {
    let tracker = crate::admin::connect(&args.access)?;
    let OpsTopCommand::Status { json } = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let v = runtime.block_on(tracker.call(reqwest::Method::GET, "/v1/ops/overview", None))?;
    let o: Overview =
        serde_json::from_value(v).context("the tracker's overview is not what this shoal reads")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        print!("{}", render(&o));
    }
    if !o.alerts.is_empty() {
        return Err(with_exit(
            anyhow::anyhow!(
                "{}",
                human::plural(o.alerts.len() as u64, "alert is", "alerts are") + " active"
            ),
            Exit::Alerts,
        ));
    }
    Ok(())
}

fn pct(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{:.1}%", x * 100.0))
}

fn secs(s: Option<f64>) -> String {
    s.map_or("—".into(), |s| {
        human::duration(Duration::from_secs_f64(s.max(0.0)))
    })
}

fn mbit(bps: u64) -> String {
    format!("{:.1} Mbit/s", bps as f64 / 1e6)
}

fn alert_line(a: &Alert) -> String {
    match a {
        Alert::SeedHot { seed, utilisation } => {
            format!("seed {seed} at {} of capacity", pct(Some(*utilisation)))
        }
        Alert::SeedStale { seed, age_secs } => {
            format!("seed {seed} silent for {}", secs(Some(*age_secs as f64)))
        }
        Alert::SwarmWithoutSeedCapacity { swarm, product } => {
            let id = swarm.to_string();
            format!(
                "swarm {} ({}): its seeds have no capacity left",
                &id[..id.len().min(12)],
                product.as_deref().unwrap_or("?")
            )
        }
    }
}

/// The overview as plain-text tables.
pub fn render(o: &Overview) -> String {
    let mut out = String::new();
    out.push_str("ALERTS\n");
    if o.alerts.is_empty() {
        out.push_str("  none\n");
    }
    for a in &o.alerts {
        out.push_str(&format!("  ! {}\n", alert_line(a)));
    }
    out.push_str("\nSWARMS\n");
    out.push_str(&format!(
        "  {:<14} {:<8} {:>4} {:>6} {:>9} {:>10} {:>6} {:>11} {:>11} {:>8} {:>14} {:>8}\n",
        "product",
        "channel",
        "ver",
        "peers",
        "complete",
        "behind NAT",
        "seeds",
        "from peers",
        "from seeds",
        "offload",
        "origin budget",
        "ETA"
    ));
    for w in &o.swarms {
        out.push_str(&format!(
            "  {:<14} {:<8} {:>4} {:>6} {:>9} {:>10} {:>6} {:>11} {:>11} {:>8} {:>14} {:>8}\n",
            w.product.as_deref().unwrap_or("?"),
            w.channel.as_deref().unwrap_or("?"),
            w.version.map_or("?".into(), |v| v.to_string()),
            w.stats.peers,
            w.stats.complete,
            unreachable_share(w),
            w.seeds,
            human::bytes(w.bytes_from_peers),
            human::bytes(w.bytes_from_seeds),
            pct(w.offload),
            budget_used(w),
            secs(w.eta_secs),
        ));
    }
    out.push_str("\nSEEDS\n");
    // (Members nobody can dial are reached through seeds' relays and hole
    // punches; a high share with low offload says the punches fail.)
    out.push_str(&format!(
        "  {:<12} {:>14} {:>14} {:>6} {:>6} {:>11} {:>10} {:>6}\n",
        "seed", "capacity", "egress", "util", "peers", "free disk", "heartbeat", "state"
    ));
    for s in &o.seeds {
        let r = &s.seed.report;
        out.push_str(&format!(
            "  {:<12} {:>14} {:>14} {:>6} {:>6} {:>11} {:>10} {:>6}\n",
            r.seed_id,
            mbit(r.capacity_bps),
            mbit(r.egress_bps),
            pct(Some(s.utilisation)),
            r.peers,
            human::bytes(r.free_disk),
            format!("{} ago", secs(Some(s.heartbeat_age_secs as f64))),
            if s.stale { "stale" } else { "fresh" },
        ));
    }
    if !o.refusals.is_empty() {
        out.push_str("\nTOKEN REFUSALS (last hour)\n");
        for (reason, n) in &o.refusals {
            out.push_str(&format!("  {reason:<24} {n}\n"));
        }
    }
    out
}

/// Members behind NATs as a share of the swarm ("-" when empty).
fn unreachable_share(w: &SwarmView) -> String {
    if w.stats.peers == 0 {
        return "-".into();
    }
    format!(
        "{:.0}%",
        100.0 * w.stats.unreachable as f64 / w.stats.peers as f64
    )
}

/// How much of its origin budget a swarm used, e.g. `52.0% of 2`.
fn budget_used(w: &SwarmView) -> String {
    match (w.origin_budget, w.origin_budget_used) {
        (Some(b), Some(used)) => format!("{} of {b}", pct(Some(used))),
        (Some(b), None) => format!("{} ({b})", human::bytes(w.origin_sent_bytes)),
        (None, _) => "—".into(),
    }
}
