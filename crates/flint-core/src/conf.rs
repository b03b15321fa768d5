//! Application configuration (Spark's SparkConf) and master URL parsing.
//!
//! Keys mirror Spark's with the `flint.` prefix; `docs/configuration.md` lists the
//! ones the engine reads, with their defaults. Values are strings, parsed where read,
//! so an unknown key is kept (later components may read it) and a bad value is an
//! error naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{FlintError, Result};

/// Environment variable through which `flint submit` hands its settings
/// (`--master`, `--conf`, ...) to the application: one `key=value` per line.
/// They fill in only keys the application does not set itself (a value set
/// in code wins, as in Spark).
pub const SUBMIT_CONF_VAR: &str = "FLINT_SUBMIT_CONF";

/// Key/value configuration of one application.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlintConf {
    entries: BTreeMap<String, String>,
}

/// Encodes settings for [`SUBMIT_CONF_VAR`]; refuses what would not
/// round-trip (a newline in a key or value, `=` in a key).
pub fn encode_submitted<'a>(
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String> {
    let mut out = String::new();
    for (k, v) in entries {
        if k.is_empty() || k.contains(['=', '\n', '\r']) || v.contains(['\n', '\r']) {
            return Err(FlintError::Config(format!(
                "setting {k:?}={v:?} cannot be passed on: keys need no '=' and neither may hold a line break"
            )));
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
        out.push('\n');
    }
    Ok(out)
}

fn parse_submitted(text: &str) -> Result<Vec<(String, String)>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split_once('=')
                .filter(|(k, _)| !k.is_empty())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| {
                    FlintError::Config(format!(
                        "{SUBMIT_CONF_VAR} has a line that is not key=value: {l:?}"
                    ))
                })
        })
        .collect()
}

impl FlintConf {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.entries.insert(key.into(), value.into());
        self
    }

    pub fn set_mut(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.entries.insert(key.into(), value.into());
    }

    /// Fills keys not set here from `flint submit`'s settings, if any.
    pub fn with_submitted_defaults(mut self) -> Result<Self> {
        let Ok(text) = std::env::var(SUBMIT_CONF_VAR) else {
            return Ok(self);
        };
        for (k, v) in parse_submitted(&text)? {
            self.entries.entry(k).or_insert(v);
        }
        Ok(self)
    }

    pub fn remove(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    pub fn app_name(self, name: impl Into<String>) -> Self {
        self.set("flint.app.name", name)
    }

    pub fn master(self, url: impl Into<String>) -> Self {
        self.set("flint.master", url)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn get_bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(FlintError::Config(format!(
                    "{key}={v} is not a boolean; use true or false"
                ))),
            },
        }
    }

    pub fn get_usize(&self, key: &str, default: usize) -> Result<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|_| {
                FlintError::Config(format!("{key}={v} is not a non-negative integer"))
            }),
        }
    }

    /// `flint.rpc.message.maxSize` in bytes: the largest RPC frame (given in
    /// MiB, as Spark's spark.rpc.message.maxSize; 128 by default, 1 to 2047).
    pub fn rpc_max_message_size(&self) -> Result<usize> {
        let mib = self.get_usize("flint.rpc.message.maxSize", 128)?;
        if mib == 0 || mib > 2047 {
            return Err(FlintError::Config(format!(
                "flint.rpc.message.maxSize={mib} must be between 1 and 2047 (MiB)"
            )));
        }
        Ok(mib << 20)
    }

    pub fn get_f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| FlintError::Config(format!("{key}={v} is not a number"))),
        }
    }

    /// A size such as `512m`, `4g`, `1024k` or a plain byte count.
    pub fn get_bytes(&self, key: &str, default: u64) -> Result<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_bytes(v).ok_or_else(|| {
                FlintError::Config(format!(
                    "{key}={v} is not a size; use a number with an optional unit k, m, g or t (e.g. 512m)"
                ))
            }),
        }
    }

    /// A duration such as `100ms`, `3s`, `2min` or a plain number of milliseconds.
    pub fn get_duration(&self, key: &str, default: Duration) -> Result<Duration> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_duration(v).ok_or_else(|| {
                FlintError::Config(format!(
                    "{key}={v} is not a duration; use e.g. 100ms, 3s or 2min"
                ))
            }),
        }
    }
}

pub fn parse_bytes(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_lowercase();
    let v = v.strip_suffix('b').unwrap_or(&v);
    let (num, mult) = match v.chars().last()? {
        'k' => (&v[..v.len() - 1], 1u64 << 10),
        'm' => (&v[..v.len() - 1], 1 << 20),
        'g' => (&v[..v.len() - 1], 1 << 30),
        't' => (&v[..v.len() - 1], 1 << 40),
        _ => (v, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

pub fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim().to_ascii_lowercase();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..split].parse().ok()?;
    Some(match &v[split..] {
        "" | "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "min" | "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        "us" => Duration::from_micros(n),
        _ => return None,
    })
}

/// Where the application runs, parsed from the master URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterUrl {
    /// `local`, `local[N]`, `local[*]`, `local[N,F]`: N task threads, F max task failures.
    Local { threads: usize, max_failures: usize },
    /// `flint://host:port[,host:port...]` or `local-cluster[N,C,M]`: executors
    /// in other processes, through the cluster backend.
    Cluster { url: String },
}

impl MasterUrl {
    pub fn parse(url: &str) -> Result<Self> {
        let err = |reason: &str| FlintError::MasterUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let u = url.trim();
        if u == "local" {
            return Ok(MasterUrl::Local {
                threads: 1,
                max_failures: 1,
            });
        }
        if let Some(inner) = u.strip_prefix("local[").and_then(|r| r.strip_suffix(']')) {
            let mut parts = inner.split(',');
            let threads = match parts.next().map(str::trim) {
                Some("*") => available_cores(),
                Some(n) => match n.parse::<usize>() {
                    Ok(0) | Err(_) => {
                        return Err(err("the thread count must be a positive integer or *"));
                    }
                    Ok(n) => n,
                },
                None => return Err(err("missing thread count")),
            };
            let max_failures = match parts.next().map(str::trim) {
                None => 1,
                Some(f) => match f.parse::<usize>() {
                    Ok(0) | Err(_) => {
                        return Err(err("the max task failures must be a positive integer"));
                    }
                    Ok(f) => f,
                },
            };
            if parts.next().is_some() {
                return Err(err("too many values inside local[...]"));
            }
            return Ok(MasterUrl::Local {
                threads,
                max_failures,
            });
        }
        if u.starts_with("flint://") || u.starts_with("local-cluster[") {
            return Ok(MasterUrl::Cluster { url: u.to_string() });
        }
        // A Spark user's URL for the same kind of Master (the daemons accept
        // it too).
        if let Some(rest) = u.strip_prefix("spark://") {
            return Ok(MasterUrl::Cluster {
                url: format!("flint://{rest}"),
            });
        }
        Err(err("unrecognised master URL"))
    }
}

pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_settings_round_trip_and_refuse_line_breaks() {
        let text = encode_submitted([
            ("flint.master", "flint://h:7077"),
            ("flint.x", "a=b c"),
            ("flint.empty", ""),
        ])
        .unwrap();
        assert_eq!(
            parse_submitted(&text).unwrap(),
            vec![
                ("flint.master".to_string(), "flint://h:7077".to_string()),
                ("flint.x".into(), "a=b c".into()),
                ("flint.empty".into(), "".into()),
            ]
        );
        assert!(encode_submitted([("k", "two\nlines")]).is_err());
        assert!(encode_submitted([("k=v", "x")]).is_err());
        let e = parse_submitted("flint.a=1\nnonsense\n").unwrap_err();
        assert!(e.to_string().contains("FLINT_SUBMIT_CONF"), "{e}");
    }

    #[test]
    fn master_urls() {
        assert_eq!(
            MasterUrl::parse("local").unwrap(),
            MasterUrl::Local {
                threads: 1,
                max_failures: 1
            }
        );
        assert_eq!(
            MasterUrl::parse("local[4]").unwrap(),
            MasterUrl::Local {
                threads: 4,
                max_failures: 1
            }
        );
        assert_eq!(
            MasterUrl::parse("local[2,3]").unwrap(),
            MasterUrl::Local {
                threads: 2,
                max_failures: 3
            }
        );
        assert!(matches!(
            MasterUrl::parse("local[*]").unwrap(),
            MasterUrl::Local { threads, .. } if threads >= 1
        ));
        for bad in ["local[0]", "local[x]", "yarn", "local[2,0]", "local[1,2,3]"] {
            let e = MasterUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
            // The message names every form, the cluster ones too.
            assert!(
                e.contains("flint://host:port") && e.contains("local-cluster[N,C,M]"),
                "{e}"
            );
        }
        // Spark's URL for a standalone Master names Flint's.
        assert_eq!(
            MasterUrl::parse("spark://h:7077").unwrap(),
            MasterUrl::Cluster {
                url: "flint://h:7077".into()
            }
        );
        // Cluster URLs go to the cluster backend, which parses them itself.
        for url in ["flint://h:7077", "local-cluster[2,1,512]"] {
            assert_eq!(
                MasterUrl::parse(url).unwrap(),
                MasterUrl::Cluster { url: url.into() }
            );
        }
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("4g"), Some(4 << 30));
        assert_eq!(parse_bytes("100"), Some(100));
        assert_eq!(parse_bytes("12x"), None);
        assert_eq!(parse_duration("3s"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("100ms"), Some(Duration::from_millis(100)));
        assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
        let c = FlintConf::new().set("flint.x", "maybe");
        assert!(
            c.get_bool("flint.x", false)
                .unwrap_err()
                .to_string()
                .contains("flint.x")
        );
    }
}
