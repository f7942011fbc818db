//! Network namespaces for tests that need real routers: hosts, links, NAT
//! routers (nftables), and processes run inside them. Every namespace and
//! every process in it goes away when the [`Net`] is dropped, also when the
//! test fails. Addresses exist only inside the namespaces made here.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); `.ci/run` installs them.

use anyhow::{Context, bail};
use std::process::{Command, Stdio};

/// How a NAT router maps and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Masquerade keeping source ports (one mapping per inside socket for
    /// every destination: endpoint-independent), inbound only for flows the
    /// inside opened (port-restricted filtering): the common home router.
    Cone,
    /// Masquerade with a random port per flow (`fully-random`): a mapping per
    /// destination, so the port a peer learns from a third party is useless.
    Symmetric,
    /// As `Cone`, but the router itself accepts unsolicited packets from
    /// outside (no port listens, so they go nowhere) instead of dropping
    /// them, and conntrack keeps an entry for each: a peer's punch arriving
    /// before our first outbound packet then takes the mapping's tuple, and
    /// our flow leaves from another port (the Linux conntrack pitfall).
    ConeKeepsStrays,
}

/// A set of namespaces made by one test; all named `<prefix>-<host>`.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    spaces: Vec<String>,
}

/// Runs a command to completion; its stderr in the error.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

impl Net {
    /// A fresh set of namespaces for test `tag`. Fails with what is missing
    /// when not root or without `ip` and `nft`.
    pub fn new(tag: &str) -> anyhow::Result<Net> {
        if !is_root() {
            bail!("network-namespace tests run as root (they make namespaces and NAT routers)");
        }
        for tool in ["ip", "nft"] {
            if run(Command::new(tool).arg("-V")).is_err() {
                bail!("{tool} is missing: install iproute2 and nftables (scripts/test does)");
            }
        }
        Ok(Net {
            prefix: format!("st{}{tag}", std::process::id()),
            spaces: Vec::new(),
        })
    }

    /// The namespace name of `host`.
    pub fn ns(&self, host: &str) -> String {
        format!("{}-{host}", self.prefix)
    }

    /// Makes host `name` (loopback up).
    pub fn host(&mut self, name: &str) -> anyhow::Result<()> {
        let space = self.ns(name);
        ip(&["netns", "add", &space])?;
        self.spaces.push(space.clone());
        ip(&["-n", &space, "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// A veth link between `a`'s interface `a_if` (address `a_addr`, CIDR)
    /// and `b`'s `b_if` (`b_addr`, or none: e.g. a bridge port).
    pub fn link(
        &self,
        (a, a_if, a_addr): (&str, &str, Option<&str>),
        (b, b_if, b_addr): (&str, &str, Option<&str>),
    ) -> anyhow::Result<()> {
        let (na, nb) = (self.ns(a), self.ns(b));
        ip(&[
            "link", "add", a_if, "netns", &na, "type", "veth", "peer", "name", b_if, "netns", &nb,
        ])?;
        for (space, dev, addr) in [(&na, a_if, a_addr), (&nb, b_if, b_addr)] {
            if let Some(addr) = addr {
                ip(&["-n", space, "addr", "add", addr, "dev", dev])?;
            }
            ip(&["-n", space, "link", "set", dev, "up"])?;
        }
        Ok(())
    }

    /// A bridge `name` in `host`, with the given ports.
    pub fn bridge(&self, host: &str, name: &str, ports: &[&str]) -> anyhow::Result<()> {
        let space = self.ns(host);
        ip(&["-n", &space, "link", "add", name, "type", "bridge"])?;
        ip(&["-n", &space, "link", "set", name, "up"])?;
        for port in ports {
            ip(&["-n", &space, "link", "set", port, "master", name])?;
        }
        Ok(())
    }

    /// `host` sends everything not local via `gateway`.
    pub fn default_route(&self, host: &str, gateway: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.ns(host),
            "route",
            "add",
            "default",
            "via",
            gateway,
        ])?;
        Ok(())
    }

    /// Makes `host` a NAT router: it forwards from `lan` out of `wan`,
    /// translating as `nat` says, and lets in from `wan` only what belongs
    /// to flows the inside opened. Like a home router's firewall, it drops
    /// unsolicited packets to itself rather than answering them, so a
    /// peer's punch packet arriving before our own outbound one leaves no
    /// conntrack entry behind that would steal the mapping.
    pub fn nat_router(&self, host: &str, lan: &str, wan: &str, nat: Nat) -> anyhow::Result<()> {
        let space = self.ns(host);
        run(Command::new("ip").args([
            "netns",
            "exec",
            &space,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        let translate = match nat {
            Nat::Cone | Nat::ConeKeepsStrays => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        let strays = match nat {
            Nat::ConeKeepsStrays => "accept",
            _ => "drop",
        };
        let rules = format!(
            "table inet shoal_nat {{
  chain input {{ type filter hook input priority 0; policy accept;
    iifname \"{wan}\" ct state established,related accept
    iifname \"{wan}\" {strays}
  }}
  chain forward {{ type filter hook forward priority 0; policy drop;
    iifname \"{lan}\" accept
    iifname \"{wan}\" ct state established,related accept
  }}
  chain postrouting {{ type nat hook postrouting priority 100;
    oifname \"{wan}\" {translate}
  }}
}}
"
        );
        self.nft(host, &rules)
    }

    /// Forces the order of the first packets at the NAT router `host`: every
    /// packet from its LAN to `peer` (another router's outside address) is
    /// dropped, before translation, until a packet from `peer` has reached
    /// `wan`. The peer's punch then arrives before our first outbound
    /// packet, the order in which a router that kept a conntrack entry for
    /// it would hand our flow a different port. Whichever side would have
    /// sent first, the peer's packet is the first of the two at `host`;
    /// `held_back` says how many of ours had to wait for it.
    pub fn hear_first(&self, host: &str, wan: &str, peer: &str) -> anyhow::Result<()> {
        let rules = format!(
            "table inet shoal_order {{
  set heard {{ type ipv4_addr; }}
  chain pre {{ type filter hook prerouting priority -300;
    iifname \"{wan}\" ip saddr {peer} add @heard {{ ip saddr }}
  }}
  chain forward {{ type filter hook forward priority -10;
    oifname \"{wan}\" ip daddr {peer} ip daddr != @heard counter drop
  }}
}}
"
        );
        self.nft(host, &rules)
    }

    /// Whether a packet from `peer` has reached `host` since `hear_first`.
    pub fn heard_from(&self, host: &str, peer: &str) -> anyhow::Result<bool> {
        Ok(self
            .nft_list(host, &["set", "inet", "shoal_order", "heard"])?
            .contains(peer))
    }

    /// Packets `hear_first` held back at `host` so far.
    pub fn held_back(&self, host: &str) -> anyhow::Result<u64> {
        let out = self.nft_list(host, &["chain", "inet", "shoal_order", "forward"])?;
        let packets = out
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .with_context(|| format!("no counter in {out}"))?;
        packets
            .parse()
            .with_context(|| format!("counter {packets:?}"))
    }

    /// `nft list WHAT…` inside `host`.
    fn nft_list(&self, host: &str, what: &[&str]) -> anyhow::Result<String> {
        let space = self.ns(host);
        let mut args = vec!["netns", "exec", &space, "nft", "list"];
        args.extend_from_slice(what);
        run(Command::new("ip").args(args))
    }

    fn nft(&self, host: &str, rules: &str) -> anyhow::Result<()> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        use std::io::Write as _;
        child
            .stdin
            .take()
            .context("nft's stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft in {host}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A command that runs `program` inside `host`.
    pub fn command(&self, host: &str, program: &std::path::Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)]).arg(program);
        c
    }

    /// Bytes sent out of `host`'s interface `dev` so far.
    pub fn tx_bytes(&self, host: &str, dev: &str) -> anyhow::Result<u64> {
        self.counter(host, dev, "tx_bytes")
    }

    /// Bytes received on `host`'s interface `dev` so far.
    pub fn rx_bytes(&self, host: &str, dev: &str) -> anyhow::Result<u64> {
        self.counter(host, dev, "rx_bytes")
    }

    fn counter(&self, host: &str, dev: &str, what: &str) -> anyhow::Result<u64> {
        let path = format!("/sys/class/net/{dev}/statistics/{what}");
        let out = run(Command::new("ip").args(["netns", "exec", &self.ns(host), "cat", &path]))?;
        out.trim()
            .parse()
            .with_context(|| format!("{path} in {host}: {out:?}"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for space in self.spaces.iter().rev() {
            // Every process still in the namespace first, or it outlives it.
            if let Ok(pids) = ip(&["netns", "pids", space]) {
                for pid in pids.split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = ip(&["netns", "del", space]);
        }
    }
}

/// Whether this process runs with effective uid 0 (from /proc: no libc).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}
