//! Scheduling pools: FIFO orders task sets by job then stage; FAIR shares slots
//! between pools by min share and weight (Spark's fairscheduler.xml).

use std::cmp::Ordering;
use std::collections::HashMap;

use crate::error::{FlintError, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchedulingMode {
    Fifo,
    Fair,
}

impl SchedulingMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "FIFO" => Ok(SchedulingMode::Fifo),
            "FAIR" => Ok(SchedulingMode::Fair),
            other => Err(FlintError::Config(format!(
                "scheduling mode '{other}' is not FIFO or FAIR"
            ))),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PoolConf {
    pub name: String,
    pub mode: SchedulingMode,
    pub weight: usize,
    pub min_share: usize,
}

impl PoolConf {
    pub fn default_named(name: &str) -> Self {
        PoolConf {
            name: name.to_string(),
            mode: SchedulingMode::Fifo,
            weight: 1,
            min_share: 0,
        }
    }
}

/// Reads pools from a file in Spark's fairscheduler.xml format:
/// `<allocations><pool name="x"><schedulingMode>FAIR</schedulingMode><weight>2</weight><minShare>1</minShare></pool></allocations>`.
pub fn parse_allocations(xml: &str) -> Result<HashMap<String, PoolConf>> {
    let mut pools = HashMap::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<pool") {
        let after = &rest[start + 5..];
        let end = after
            .find("</pool>")
            .or_else(|| after.find("/>"))
            .ok_or_else(|| {
                FlintError::Config("unterminated <pool> element in allocation file".into())
            })?;
        let body = &after[..end];
        let name = attr(body, "name")
            .ok_or_else(|| FlintError::Config("a <pool> element has no name attribute".into()))?;
        let mut p = PoolConf::default_named(&name);
        if let Some(m) = element(body, "schedulingMode") {
            p.mode = SchedulingMode::parse(&m)?;
        }
        if let Some(w) = element(body, "weight") {
            p.weight = w.trim().parse().map_err(|_| {
                FlintError::Config(format!("pool {name}: weight '{w}' is not a whole number"))
            })?;
        }
        if let Some(m) = element(body, "minShare") {
            p.min_share = m.trim().parse().map_err(|_| {
                FlintError::Config(format!("pool {name}: minShare '{m}' is not a whole number"))
            })?;
        }
        pools.insert(name, p);
        rest = &after[end..];
    }
    Ok(pools)
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=");
    let i = tag.find(&key)? + key.len();
    let quote = tag[i..].chars().next()?;
    let rest = &tag[i + 1..];
    Some(rest[..rest.find(quote)?].to_string())
}

fn element(body: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let i = body.find(&open)? + open.len();
    let j = body[i..].find(&close)? + i;
    Some(body[i..j].trim().to_string())
}

/// Spark's FairSchedulingAlgorithm: pools below their min share first (by how far
/// below), then by running tasks per unit of weight, then by name.
pub fn fair_cmp(a: (&PoolConf, usize), b: (&PoolConf, usize)) -> Ordering {
    let (pa, ra) = a;
    let (pb, rb) = b;
    let needy_a = ra < pa.min_share;
    let needy_b = rb < pb.min_share;
    let share_ratio = |r: usize, p: &PoolConf| r as f64 / p.min_share.max(1) as f64;
    let weight_ratio = |r: usize, p: &PoolConf| r as f64 / p.weight.max(1) as f64;
    let ord = match (needy_a, needy_b) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (true, true) => share_ratio(ra, pa).total_cmp(&share_ratio(rb, pb)),
        (false, false) => weight_ratio(ra, pa).total_cmp(&weight_ratio(rb, pb)),
    };
    ord.then_with(|| pa.name.cmp(&pb.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spark_allocation_file() {
        let xml = r#"<?xml version="1.0"?>
<allocations>
  <pool name="production">
    <schedulingMode>FAIR</schedulingMode>
    <weight>2</weight>
    <minShare>3</minShare>
  </pool>
  <pool name='test'>
    <schedulingMode>FIFO</schedulingMode>
  </pool>
</allocations>"#;
        let p = parse_allocations(xml).unwrap();
        assert_eq!(p["production"].weight, 2);
        assert_eq!(p["production"].min_share, 3);
        assert_eq!(p["production"].mode, SchedulingMode::Fair);
        assert_eq!(p["test"].weight, 1);
        assert!(parse_allocations("<pool name=\"x\"><weight>two</weight></pool>").is_err());
    }

    #[test]
    fn fair_ordering() {
        let a = PoolConf {
            weight: 2,
            ..PoolConf::default_named("a")
        };
        let b = PoolConf::default_named("b");
        // a has 2 running with weight 2 (ratio 1), b has 1 with weight 1 (ratio 1): tie by name.
        assert_eq!(fair_cmp((&a, 2), (&b, 1)), Ordering::Less);
        assert_eq!(fair_cmp((&a, 3), (&b, 1)), Ordering::Greater);
        let needy = PoolConf {
            min_share: 2,
            ..PoolConf::default_named("z")
        };
        assert_eq!(fair_cmp((&needy, 1), (&a, 0)), Ordering::Less);
    }
}
