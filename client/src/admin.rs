//! `shoal admin`: operator and publisher actions against a tracker's API.

use crate::cli::{
    AccountsCommand, AdminArgs, AdminCommand, AuditArgs, ChannelsCommand, EntitlementsCommand,
    KeysCommand, OpsCommand, OrgsCommand, ProductsCommand, PublisherKeysCommand, PublishersCommand,
    ReleasesCommand,
};
use crate::tracker::Tracker;
use crate::{Exit, manifest_cmd, with_exit};
use anyhow::Context as _;
use reqwest::Method;
use serde_json::Value;
use std::io::Write as _;

pub(crate) fn run(args: &AdminArgs) -> anyhow::Result<()> {
    let tracker = connect(&args.access)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = runtime.block_on(dispatch(&tracker, &args.command))?;
    match answer {
        Some(v) if args.json => println!("{v}"),
        Some(v) => print!("{}", render(&v)),
        None => {}
    }
    Ok(())
}

/// A tracker client with the API key from a flag, the environment or a file.
pub(crate) fn connect(access: &crate::cli::TrackerAccess) -> anyhow::Result<Tracker> {
    let key = match (&access.api_key, &access.api_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading API key file {}", path.display()))
                .map_err(|e| with_exit(e, Exit::BadInput))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    };
    Tracker::new(&access.tracker, key)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Percent-encodes a path segment (ids are plain, but be safe).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A role name as the tracker spells it.
fn parse_role(role: &str) -> anyhow::Result<shoal_api::Role> {
    use shoal_api::Role;
    Ok(match role {
        "operator" => Role::Operator,
        "publisher" => Role::Publisher,
        "player" => Role::Player,
        "seed" => Role::Seed,
        other => {
            return Err(with_exit(
                anyhow::anyhow!("role {other:?}: one of operator, publisher, player, seed"),
                Exit::BadInput,
            ));
        }
    })
}

async fn dispatch(t: &Tracker, command: &AdminCommand) -> anyhow::Result<Option<Value>> {
    use Method as M;
    let v = match command {
        AdminCommand::Accounts(c) => match c {
            AccountsCommand::Create {
                name,
                country,
                seats,
            } => {
                let body = shoal_api::NewAccount {
                    name: name.clone(),
                    kind: if seats.is_some() {
                        shoal_api::AccountKind::Organisation
                    } else {
                        shoal_api::AccountKind::Individual
                    },
                    country: country.clone(),
                    seats: seats.unwrap_or(0),
                };
                t.send(M::POST, "/v1/accounts", &body).await?
            }
            AccountsCommand::List => t.call(M::GET, "/v1/accounts", None).await?,
            AccountsCommand::Show { id } => {
                t.call(M::GET, &format!("/v1/accounts/{}", seg(id)), None)
                    .await?
            }
        },
        AdminCommand::Orgs(c) => match c {
            OrgsCommand::AddMember { org, account } => {
                let body = shoal_api::NewMember {
                    account: account.clone(),
                };
                t.send(
                    M::POST,
                    &format!("/v1/accounts/{}/members", seg(org)),
                    &body,
                )
                .await?
            }
            OrgsCommand::RemoveMember { org, account } => {
                t.call(
                    M::DELETE,
                    &format!("/v1/accounts/{}/members/{}", seg(org), seg(account)),
                    None,
                )
                .await?
            }
        },
        AdminCommand::Keys(c) => match c {
            KeysCommand::Create { account, role } => {
                let body = shoal_api::NewApiKey {
                    account: account.clone(),
                    role: parse_role(role)?,
                };
                t.send(M::POST, "/v1/api-keys", &body).await?
            }
            KeysCommand::List => t.call(M::GET, "/v1/api-keys", None).await?,
            KeysCommand::Revoke { id } => {
                t.call(M::DELETE, &format!("/v1/api-keys/{}", seg(id)), None)
                    .await?
            }
        },
        AdminCommand::Products(c) => match c {
            ProductsCommand::Create {
                id,
                name,
                paid,
                channels,
                publishers,
            } => {
                let body = shoal_api::NewProduct {
                    id: id.clone(),
                    name: name.clone(),
                    paid: *paid,
                    channels: (!channels.is_empty()).then(|| channels.clone()),
                    publishers: publishers.clone(),
                };
                t.send(M::POST, "/v1/products", &body).await?
            }
            ProductsCommand::List => t.call(M::GET, "/v1/products", None).await?,
            ProductsCommand::Show { id } => {
                t.call(M::GET, &format!("/v1/products/{}", seg(id)), None)
                    .await?
            }
        },
        AdminCommand::Channels(c) => match c {
            ChannelsCommand::Add {
                product,
                name,
                private,
                allow,
                origin_budget,
                preload_days,
            } => {
                let body = shoal_api::NewChannel {
                    name: name.clone(),
                    private: *private,
                    allow: allow.clone(),
                    origin_budget: *origin_budget,
                    preload_days: *preload_days,
                };
                t.send(
                    M::POST,
                    &format!("/v1/products/{}/channels", seg(product)),
                    &body,
                )
                .await?
            }
            ChannelsCommand::Allow {
                product,
                name,
                accounts,
            } => {
                let path = format!("/v1/products/{}/channels/{}/allow", seg(product), seg(name));
                let body = shoal_api::AllowList {
                    accounts: accounts.clone(),
                };
                t.send(M::PUT, &path, &body).await?
            }
        },
        AdminCommand::PublisherKeys(c) => match c {
            PublisherKeysCommand::Add {
                product,
                public_key,
            } => {
                let path = format!("/v1/products/{}/publisher-keys", seg(product));
                let public_key = public_key.parse().map_err(|e| {
                    with_exit(
                        anyhow::anyhow!("public key {public_key:?}: {e}"),
                        Exit::BadInput,
                    )
                })?;
                t.send(M::POST, &path, &shoal_api::NewPublisherKey { public_key })
                    .await?
            }
            PublisherKeysCommand::Remove {
                product,
                public_key,
            } => {
                let path = format!(
                    "/v1/products/{}/publisher-keys/{}",
                    seg(product),
                    seg(public_key)
                );
                t.call(M::DELETE, &path, None).await?
            }
        },
        AdminCommand::Publishers(c) => match c {
            PublishersCommand::Add { product, account } => {
                let path = format!("/v1/products/{}/publishers", seg(product));
                let body = shoal_api::NewPublisher {
                    account: account.clone(),
                };
                t.send(M::POST, &path, &body).await?
            }
            PublishersCommand::Remove { product, account } => {
                let path = format!("/v1/products/{}/publishers/{}", seg(product), seg(account));
                t.call(M::DELETE, &path, None).await?
            }
        },
        AdminCommand::Entitlements(c) => match c {
            EntitlementsCommand::Grant {
                account,
                product,
                channel,
                expires_at,
                expires_in,
            } => {
                let expires = expires_at.or(expires_in.map(|d| now() + d));
                let body = shoal_api::NewEntitlement {
                    account: account.clone(),
                    product: product.clone(),
                    channel: channel.clone(),
                    expires_at: expires,
                };
                t.send(M::POST, "/v1/entitlements", &body).await?
            }
            EntitlementsCommand::List { account } => {
                t.call(
                    M::GET,
                    &format!("/v1/entitlements?account={}", seg(account)),
                    None,
                )
                .await?
            }
            EntitlementsCommand::Revoke { id } => {
                t.call(M::DELETE, &format!("/v1/entitlements/{}", seg(id)), None)
                    .await?
            }
        },
        AdminCommand::Releases(c) => match c {
            ReleasesCommand::Register {
                bundle,
                origin_budget,
            } => {
                // Check it locally first: a clear error beats a tracker refusal.
                manifest_cmd::load(bundle)?;
                let file = if bundle.is_dir() {
                    bundle.join(shoal_manifest::bundle::MANIFEST_FILE)
                } else {
                    bundle.clone()
                };
                let bytes =
                    std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
                t.post_bytes(&register_path(*origin_budget), bytes).await?
            }
            ReleasesCommand::Budget {
                release,
                origin_budget,
            } => {
                let body = shoal_api::SetBudget {
                    origin_budget: *origin_budget,
                };
                t.send(
                    M::PUT,
                    &format!("/v1/releases/{}/budget", seg(release)),
                    &body,
                )
                .await?
            }
            ReleasesCommand::Key {
                release,
                key_file,
                unlock_at,
            } => {
                let key = crate::publish::read_content_key(key_file)?;
                let body = shoal_api::SetContentKey {
                    content_key: key.to_hex(),
                    unlock_at: *unlock_at,
                };
                t.send(M::PUT, &format!("/v1/releases/{}/key", seg(release)), &body)
                    .await?
            }
            ReleasesCommand::Unlock { release } => {
                let body = shoal_api::SetUnlock { at: None };
                t.send(
                    M::PUT,
                    &format!("/v1/releases/{}/unlock", seg(release)),
                    &body,
                )
                .await?
            }
            ReleasesCommand::Schedule {
                release,
                unlock_at,
                unlock_in,
            } => {
                let at = match (unlock_at, unlock_in) {
                    (Some(at), _) => *at,
                    (None, Some(secs)) => now() + secs,
                    (None, None) => unreachable!("clap requires one"),
                };
                let body = shoal_api::SetUnlock { at: Some(at) };
                t.send(
                    M::PUT,
                    &format!("/v1/releases/{}/unlock", seg(release)),
                    &body,
                )
                .await?
            }
            ReleasesCommand::List { product, channel } => {
                t.call(
                    M::GET,
                    &format!(
                        "/v1/products/{}/channels/{}/releases",
                        seg(product),
                        seg(channel)
                    ),
                    None,
                )
                .await?
            }
            ReleasesCommand::Rollback {
                product,
                channel,
                version,
            } => {
                let path = format!(
                    "/v1/products/{}/channels/{}/rollback",
                    seg(product),
                    seg(channel)
                );
                let body = shoal_api::Rollback { version: *version };
                t.send(M::POST, &path, &body).await?
            }
        },
        AdminCommand::Audit(a) => return audit(t, a).await,
        AdminCommand::Ops(c) => match c {
            OpsCommand::Swarms => t.call(M::GET, "/v1/ops/swarms", None).await?,
            OpsCommand::Seeds => t.call(M::GET, "/v1/ops/seeds", None).await?,
        },
    };
    Ok(Some(v))
}

/// Where a release is registered, with its origin budget if one is given.
pub fn register_path(budget: Option<shoal_api::OriginBudget>) -> String {
    match budget {
        Some(b) => format!("/v1/releases?origin_budget={b}"),
        None => "/v1/releases".to_owned(),
    }
}

async fn audit(t: &Tracker, a: &AuditArgs) -> anyhow::Result<Option<Value>> {
    let mut filters = String::new();
    if let Some(acc) = &a.account {
        filters.push_str(&format!("&account={}", seg(acc)));
    }
    if let Some(o) = &a.outcome {
        filters.push_str(&format!("&outcome={}", seg(o)));
    }
    let Some(path) = &a.export else {
        let query = format!("after={}&limit={}{filters}", a.after, a.limit);
        return Ok(Some(
            t.call(Method::GET, &format!("/v1/audit?{query}"), None)
                .await?,
        ));
    };
    // The export streams the whole log (no --limit), written as it arrives.
    let url = format!("/v1/audit/export?after={}{filters}", a.after);
    let mut lines = 0u64;
    if path.as_os_str() == "-" {
        let mut out = std::io::stdout().lock();
        t.get_streamed(&url, |piece| {
            lines += piece.iter().filter(|b| **b == b'\n').count() as u64;
            Ok(out.write_all(piece)?)
        })
        .await?;
        out.flush()?;
    } else {
        // Written beside the target and renamed once complete, so a broken
        // export never leaves a file that looks whole.
        let partial = path.with_extension(format!("partial-{}", std::process::id()));
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?,
        );
        let streamed = t
            .get_streamed(&url, |piece| {
                lines += piece.iter().filter(|b| **b == b'\n').count() as u64;
                Ok(file.write_all(piece)?)
            })
            .await;
        let finished = streamed.and_then(|_| {
            let f = file.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            Ok(())
        });
        if let Err(e) = finished {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!("exporting the audit log to {}", path.display())));
        }
        std::fs::rename(&partial, path)
            .with_context(|| format!("moving the export into {}", path.display()))?;
        eprintln!("wrote {lines} audit entries to {}", path.display());
    }
    Ok(None)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Human output for any answer: an object as aligned `key  value` lines, a
/// list of objects as a table of their scalar fields.
pub fn render(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Array(items) if items.is_empty() => out.push_str("(none)\n"),
        Value::Array(items) => {
            let columns: Vec<&String> = match &items[0] {
                Value::Object(first) => first
                    .iter()
                    .filter(|(_, v)| !v.is_array() && !v.is_object())
                    .map(|(k, _)| k)
                    .take(8)
                    .collect(),
                _ => Vec::new(),
            };
            if columns.is_empty() {
                for item in items {
                    out.push_str(&format!("{}\n", scalar(item)));
                }
                return out;
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|i| columns.iter().map(|c| scalar(&i[c.as_str()])).collect())
                .collect();
            let widths: Vec<usize> = columns
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .max()
                        .unwrap_or(0)
                        .max(c.len())
                })
                .collect();
            let line = |cells: Vec<String>| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                format!("{}\n", padded.join("  ").trim_end())
            };
            out.push_str(&line(columns.iter().map(|c| c.to_uppercase()).collect()));
            for r in rows {
                out.push_str(&line(r));
            }
        }
        Value::Object(map) => {
            let width = map.keys().map(String::len).max().unwrap_or(0);
            for (k, v) in map {
                let shown = match v {
                    Value::Array(a) if a.iter().all(|x| !x.is_object()) => {
                        a.iter().map(scalar).collect::<Vec<_>>().join(", ")
                    }
                    Value::Array(_) | Value::Object(_) => v.to_string(),
                    other => scalar(other),
                };
                out.push_str(&format!("{k:<width$}  {shown}\n"));
            }
        }
        other => out.push_str(&format!("{}\n", scalar(other))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_tables_and_objects() {
        let table = render(
            &json!([{"id": "acc_1", "name": "Alice", "members": []}, {"id": "acc_22", "name": "B", "members": []}]),
        );
        assert_eq!(table, "ID      NAME\nacc_1   Alice\nacc_22  B\n");
        let obj = render(&json!({"id": "k", "roles": ["a", "b"]}));
        assert_eq!(obj, "id     k\nroles  a, b\n");
        assert_eq!(render(&json!([])), "(none)\n");
    }

    #[test]
    fn segments_are_escaped() {
        assert_eq!(seg("acc_1"), "acc_1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
