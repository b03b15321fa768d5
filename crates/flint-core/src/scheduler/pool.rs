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
/// Parsed by a real XML parser; a malformed file or a bad value is an error
/// naming its line.
pub fn parse_allocations(xml: &str) -> Result<HashMap<String, PoolConf>> {
    let doc = roxmltree::Document::parse(xml)
        .map_err(|e| FlintError::Config(format!("allocation file is not well-formed XML: {e}")))?;
    let at = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row;
    let bad = |n: roxmltree::Node, what: String| {
        FlintError::Config(format!("allocation file, line {}: {what}", at(n)))
    };
    let root = doc.root_element();
    if root.tag_name().name() != "allocations" {
        return Err(bad(
            root,
            format!(
                "the root element is <{}>, expected <allocations>",
                root.tag_name().name()
            ),
        ));
    }
    let mut pools = HashMap::new();
    for pool in root.children().filter(|n| n.has_tag_name("pool")) {
        let name = pool
            .attribute("name")
            .ok_or_else(|| bad(pool, "a <pool> element has no name attribute".into()))?;
        let mut p = PoolConf::default_named(name);
        for field in pool.children().filter(roxmltree::Node::is_element) {
            let text = field.text().unwrap_or("").trim();
            let number = |what: &str| {
                text.parse::<usize>().map_err(|_| {
                    bad(
                        field,
                        format!("pool {name}: {what} '{text}' is not a whole number"),
                    )
                })
            };
            match field.tag_name().name() {
                "schedulingMode" => {
                    p.mode = SchedulingMode::parse(text).map_err(|_| {
                        bad(
                            field,
                            format!("pool {name}: scheduling mode '{text}' is not FIFO or FAIR"),
                        )
                    })?
                }
                "weight" => p.weight = number("weight")?,
                "minShare" => p.min_share = number("minShare")?,
                other => tracing::warn!(
                    "allocation file, line {}: pool {name}: unknown element <{other}> ignored",
                    at(field)
                ),
            }
        }
        if pools.insert(name.to_string(), p).is_some() {
            return Err(bad(pool, format!("pool {name} is defined twice")));
        }
    }
    Ok(pools)
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
        let err = parse_allocations(
            "<allocations>\n<pool name=\"x\">\n<weight>two</weight></pool></allocations>",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("line 3") && err.contains("'two'"), "{err}");
    }

    #[test]
    fn malformed_files_are_errors_with_a_line_never_a_panic() {
        // Multi-byte characters next to quotes once sliced a string mid-character.
        for xml in [
            "<allocations><pool name=\"é\"/><pool name='ü\u{2019}'></pool></allocations>",
            "<allocations><pool name=\"\u{1F600}",
            "<allocations>\n<pool name=\"a\">\n<weight>1</weight>\n</pol>",
            "<pool name=\"x\"/>",
            "<allocations><pool/></allocations>",
            "<allocations><pool name=\"a\"/><pool name=\"a\"/></allocations>",
            "",
            "\u{feff}<allocations>",
        ] {
            if let Err(e) = parse_allocations(xml) {
                let e = e.to_string();
                assert!(e.contains("line") || e.contains("XML"), "{xml:?}: {e}");
            }
        }
        let p = parse_allocations("<allocations><pool name=\"é\"/></allocations>").unwrap();
        assert_eq!(p["é"].weight, 1);
        let e = parse_allocations("<allocations>\n\n<pool name=\"a\">\n</pol>")
            .unwrap_err()
            .to_string();
        assert!(e.contains("4:"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::util::fuzz_cases(256)))]
        /// Any text at all: a map of pools or an error, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(s in "\\PC{0,200}") {
            let _ = parse_allocations(&s);
            let wrapped = format!("<allocations><pool name=\"{s}\"><weight>{s}</weight></pool></allocations>");
            let _ = parse_allocations(&wrapped);
        }
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
