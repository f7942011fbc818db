//! The origin budget: how many copies of a release's payload its seeds may
//! send to its swarm in total. A publisher chooses it at registration (time
//! against egress: `2` for a launch night, the frugal default for a routine
//! patch, `unlimited` for the fastest swarm); an operator may change it.
//! Seeds report what they sent and the tracker hands each its share.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use shoal_types::Hash;

/// Copies of the payload, in thousandths (`1050` is 1.05 copies), or no
/// bound. At least one copy: less could never complete the swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OriginBudget {
    Copies { thousandths: u32 },
    Unlimited,
}

impl OriginBudget {
    /// The frugal default: about one copy, and a little for what peers fail
    /// to deliver.
    pub const DEFAULT: OriginBudget = OriginBudget::Copies { thousandths: 1050 };
    /// Most copies a finite budget may name.
    pub const MAX_COPIES: u32 = 1000;

    /// Parses `1.05`, `2`, or `unlimited`.
    pub fn parse(s: &str) -> Result<OriginBudget, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(OriginBudget::Unlimited);
        }
        let copies: f64 = s.parse().map_err(|_| {
            format!("origin budget {s:?}: give copies of the payload (1.05, 2) or \"unlimited\"")
        })?;
        OriginBudget::copies(copies)
    }

    /// A budget of `copies`, checked: at least 1, at most [`Self::MAX_COPIES`].
    pub fn copies(copies: f64) -> Result<OriginBudget, String> {
        if !copies.is_finite() || !(1.0..=f64::from(Self::MAX_COPIES)).contains(&copies) {
            return Err(format!(
                "origin budget {copies}: it must be at least 1 copy (less cannot complete a \
                 swarm) and at most {}, or \"unlimited\"",
                Self::MAX_COPIES
            ));
        }
        Ok(OriginBudget::Copies {
            thousandths: (copies * 1000.0).round() as u32,
        })
    }

    /// The bytes it allows for a payload of `payload` bytes (`None`: no bound).
    pub fn bytes(self, payload: u64) -> Option<u64> {
        match self {
            OriginBudget::Copies { thousandths } => {
                Some((u128::from(payload) * u128::from(thousandths) / 1000) as u64)
            }
            OriginBudget::Unlimited => None,
        }
    }
}

impl Default for OriginBudget {
    fn default() -> Self {
        OriginBudget::DEFAULT
    }
}

impl std::fmt::Display for OriginBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OriginBudget::Copies { thousandths } => {
                let (whole, frac) = (thousandths / 1000, thousandths % 1000);
                if frac == 0 {
                    write!(f, "{whole}")
                } else {
                    let digits = format!("{frac:03}");
                    write!(f, "{whole}.{}", digits.trim_end_matches('0'))
                }
            }
            OriginBudget::Unlimited => f.write_str("unlimited"),
        }
    }
}

/// On the wire: a number of copies, or the string `"unlimited"` (a number
/// in a string is accepted too).
impl Serialize for OriginBudget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OriginBudget::Copies { thousandths } => {
                s.serialize_f64(f64::from(*thousandths) / 1000.0)
            }
            OriginBudget::Unlimited => s.serialize_str("unlimited"),
        }
    }
}

impl<'de> Deserialize<'de> for OriginBudget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => OriginBudget::copies(n),
            Raw::Text(t) => OriginBudget::parse(&t),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for OriginBudget {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(1.0))
                    .maximum(Some(f64::from(OriginBudget::MAX_COPIES))),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["unlimited"])),
            )
            .description(Some(
                "Copies of the payload the seeds may send to the swarm in total, or \"unlimited\"",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for OriginBudget {}

/// `PUT /v1/releases/{id}/budget` (operators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    pub origin_budget: OriginBudget,
}

/// A seed's chunk bytes sent to one swarm since it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SwarmSent {
    pub release: Hash,
    pub bytes: u64,
}

/// What one seed may send to one swarm: its share of the swarm's origin
/// budget, as a total of chunk bytes since the seed started (what it sent
/// already included), or no bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SwarmAllowance {
    pub release: Hash,
    /// `None`: unlimited.
    pub bytes: Option<u64>,
}

/// One seed's share of a swarm's origin budget: what it sent already, and
/// an even share among the `seeds` serving the swarm of what is left of
/// `budget` bytes after every seed's `sent_by_all` (`None`: unlimited). The
/// shares of what is left never add up to more than it, so seeds that send
/// their whole share keep the swarm within its budget.
pub fn budget_share(budget: Option<u64>, sent_by_all: u64, own: u64, seeds: usize) -> Option<u64> {
    budget.map(|b| own + b.saturating_sub(sent_by_all) / seeds.max(1) as u64)
}

/// Whether a swarm's seeds should be asked for chunks peers hold too: its
/// `budget` (bytes; `None`: unlimited) leaves more than a quarter copy of
/// the `payload` beyond one copy and beyond what was `sent`. A frugal
/// budget (the default 1.05) never does: its seeds are asked only for what
/// no peer holds, and spend their small margin on repeats.
pub fn seeds_fill(budget: Option<u64>, sent: u64, payload: u64) -> bool {
    budget.is_none_or(|b| b >= sent.max(payload).saturating_add(payload / 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_fill_in_only_with_a_quarter_copy_to_spare() {
        assert!(!seeds_fill(Some(1050), 0, 1000), "the frugal default");
        assert!(seeds_fill(Some(2000), 0, 1000));
        assert!(seeds_fill(Some(2000), 1750, 1000));
        assert!(!seeds_fill(Some(2000), 1751, 1000), "mostly spent");
        assert!(seeds_fill(None, u64::MAX, 1000), "unlimited");
    }

    #[test]
    fn seeds_share_what_is_left_of_a_budget() {
        // 1000 bytes allowed, 600 sent by two seeds (400 and 200): each may
        // send 200 more, so the swarm ends at the budget.
        assert_eq!(budget_share(Some(1000), 600, 400, 2), Some(600));
        assert_eq!(budget_share(Some(1000), 600, 200, 2), Some(400));
        // Spent: no more than what each sent.
        assert_eq!(budget_share(Some(1000), 1200, 700, 2), Some(700));
        // One seed, nothing sent: all of it.
        assert_eq!(budget_share(Some(1000), 0, 0, 1), Some(1000));
        assert_eq!(
            budget_share(Some(1000), 0, 0, 0),
            Some(1000),
            "no seed counted yet"
        );
        assert_eq!(budget_share(None, 5, 5, 1), None);
    }

    #[test]
    fn budgets_parse_print_and_bound() {
        assert_eq!(OriginBudget::parse("1.05"), Ok(OriginBudget::DEFAULT));
        assert_eq!(
            OriginBudget::parse(" Unlimited "),
            Ok(OriginBudget::Unlimited)
        );
        assert_eq!(OriginBudget::parse("2").unwrap().to_string(), "2");
        assert_eq!(OriginBudget::DEFAULT.to_string(), "1.05");
        assert_eq!(OriginBudget::parse("1.5").unwrap().to_string(), "1.5");
        for bad in ["0.9", "-1", "NaN", "inf", "1001", "lots", ""] {
            assert!(OriginBudget::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(OriginBudget::DEFAULT.bytes(1_000_000), Some(1_050_000));
        assert_eq!(OriginBudget::Unlimited.bytes(1), None);
        let max = OriginBudget::parse("1000").unwrap();
        assert_eq!(max.bytes(u64::MAX / 1000), Some(u64::MAX / 1000 * 1000));
    }

    #[test]
    fn on_the_wire_a_number_or_unlimited() {
        let j = |b: OriginBudget| serde_json::to_string(&b).unwrap();
        assert_eq!(j(OriginBudget::DEFAULT), "1.05");
        assert_eq!(j(OriginBudget::Unlimited), "\"unlimited\"");
        let p = |s: &str| serde_json::from_str::<OriginBudget>(s);
        assert_eq!(p("2").unwrap(), OriginBudget::Copies { thousandths: 2000 });
        assert_eq!(p("\"1.05\"").unwrap(), OriginBudget::DEFAULT);
        assert_eq!(p("\"unlimited\"").unwrap(), OriginBudget::Unlimited);
        let err = p("0.5").unwrap_err().to_string();
        assert!(err.contains("at least 1 copy"), "{err}");
    }
}
