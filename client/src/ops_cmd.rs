//! `shoal ops status`: the tracker's swarm and seed views and its alerts,
//! as tables or JSON.

use crate::cli::{OpsArgs, OpsTopCommand};
use crate::{Exit, human, with_exit};
use serde_json::Value;
use std::time::Duration;

pub(crate) fn run(args: &OpsArgs) -> anyhow::Result<()> {
    let tracker = crate::admin::connect(&args.access)?;
    let OpsTopCommand::Status { json } = args.command;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let o = runtime.block_on(tracker.call(reqwest::Method::GET, "/v1/ops/overview", None))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&o)?);
    } else {
        print!("{}", render(&o));
    }
    let alerts = o["alerts"].as_array().map_or(0, Vec::len);
    if alerts > 0 {
        return Err(with_exit(
            anyhow::anyhow!(
                "{}",
                human::plural(alerts as u64, "alert is", "alerts are") + " active"
            ),
            Exit::Alerts,
        ));
    }
    Ok(())
}

fn pct(v: &Value) -> String {
    v.as_f64()
        .map_or("—".into(), |x| format!("{:.1}%", x * 100.0))
}

fn bytes(v: &Value) -> String {
    human::bytes(v.as_u64().unwrap_or(0))
}

fn secs(v: &Value) -> String {
    v.as_f64().map_or("—".into(), |s| {
        human::duration(Duration::from_secs_f64(s.max(0.0)))
    })
}

fn mbit(v: &Value) -> String {
    format!("{:.1} Mbit/s", v.as_f64().unwrap_or(0.0) / 1e6)
}

/// The overview as plain-text tables.
pub fn render(o: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let alerts = o["alerts"].as_array().unwrap_or(&empty);
    out.push_str("ALERTS\n");
    if alerts.is_empty() {
        out.push_str("  none\n");
    }
    for a in alerts {
        let line = match a["kind"].as_str() {
            Some("seed_hot") => format!(
                "seed {} at {} of capacity",
                a["seed"].as_str().unwrap_or("?"),
                pct(&a["utilisation"])
            ),
            Some("seed_stale") => format!(
                "seed {} silent for {}",
                a["seed"].as_str().unwrap_or("?"),
                secs(&a["age_secs"])
            ),
            Some("swarm_without_seed_capacity") => format!(
                "swarm {} ({}): its seeds have no capacity left",
                a["swarm"].as_str().map_or("?", |s| &s[..s.len().min(12)]),
                a["product"].as_str().unwrap_or("?")
            ),
            _ => a.to_string(),
        };
        out.push_str(&format!("  ! {line}\n"));
    }
    out.push_str("\nSWARMS\n");
    out.push_str(&format!(
        "  {:<14} {:<8} {:>4} {:>6} {:>9} {:>10} {:>6} {:>11} {:>11} {:>8} {:>8}\n",
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
        "ETA"
    ));
    for w in o["swarms"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "  {:<14} {:<8} {:>4} {:>6} {:>9} {:>10} {:>6} {:>11} {:>11} {:>8} {:>8}\n",
            w["product"].as_str().unwrap_or("?"),
            w["channel"].as_str().unwrap_or("?"),
            w["version"].as_u64().map_or("?".into(), |v| v.to_string()),
            w["peers"],
            w["complete"],
            unreachable_share(w),
            w["seeds"],
            bytes(&w["bytes_from_peers"]),
            bytes(&w["bytes_from_seeds"]),
            pct(&w["offload"]),
            secs(&w["eta_secs"]),
        ));
    }
    out.push_str("\nSEEDS\n");
    // (Members nobody can dial are reached through seeds' relays and hole
    // punches; a high share with low offload says the punches fail.)
    out.push_str(&format!(
        "  {:<12} {:>14} {:>14} {:>6} {:>6} {:>11} {:>10} {:>6}\n",
        "seed", "capacity", "egress", "util", "peers", "free disk", "heartbeat", "state"
    ));
    for s in o["seeds"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "  {:<12} {:>14} {:>14} {:>6} {:>6} {:>11} {:>10} {:>6}\n",
            s["seed_id"].as_str().unwrap_or("?"),
            mbit(&s["capacity_bps"]),
            mbit(&s["egress_bps"]),
            pct(&s["utilisation"]),
            s["peers"],
            bytes(&s["free_disk"]),
            format!("{} ago", secs(&s["heartbeat_age_secs"])),
            if s["stale"] == true { "stale" } else { "fresh" },
        ));
    }
    let refusals = o["refusals"].as_array().unwrap_or(&empty);
    if !refusals.is_empty() {
        out.push_str("\nTOKEN REFUSALS (last hour)\n");
        for r in refusals {
            out.push_str(&format!(
                "  {:<24} {}\n",
                r[0].as_str().unwrap_or("?"),
                r[1]
            ));
        }
    }
    out
}

/// Members behind NATs as a share of the swarm ("-" when empty).
fn unreachable_share(w: &serde_json::Value) -> String {
    match (w["unreachable"].as_u64(), w["peers"].as_u64()) {
        (Some(u), Some(p)) if p > 0 => format!("{:.0}%", 100.0 * u as f64 / p as f64),
        _ => "-".into(),
    }
}
