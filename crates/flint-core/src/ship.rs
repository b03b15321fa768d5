//! Shipping monomorphised code as data (the same-binary model).
//!
//! The driver and every executor run the same executable, so a generic task such as
//! `ResultStageTask<Map<Filter<..>>, CollectFn>` exists, compiled, in both. A trait
//! object crosses the wire as the *offset* of a monomorphised deserializer function
//! from an anchor function, plus the serde payload. The receiver checks that the
//! sender's build id equals its own (a hash of the executable's bytes), that the
//! address lands inside its own executable's code mapping, and only then calls it.
//! All deserializer functions share one signature ([`DeserFn`]) returning
//! `Box<dyn Any>`, and the caller downcasts the result, so a wrong offset that still
//! passes the checks yields a type error rather than undefined behaviour in the
//! common case. This module holds the engine's only `unsafe` block.

use std::any::Any;
use std::io::Read;
use std::ops::Range;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::{FlintError, Result};

/// The single signature every shipped deserializer has.
pub type DeserFn = fn(&[u8]) -> std::result::Result<Box<dyn Any + Send>, String>;

#[inline(never)]
fn anchor(x: u8) -> u8 {
    std::hint::black_box(x).wrapping_add(1)
}

fn anchor_addr() -> usize {
    anchor as fn(u8) -> u8 as usize
}

/// Offset of `f` from the anchor, valid in every process running this binary.
pub fn offset_of(f: DeserFn) -> i64 {
    (f as usize as i64).wrapping_sub(anchor_addr() as i64)
}

/// Executable (r-x) mappings of this process's own binary.
fn code_ranges() -> &'static [Range<usize>] {
    static RANGES: OnceLock<Vec<Range<usize>>> = OnceLock::new();
    RANGES.get_or_init(|| {
        // A binary replaced on disk since it started reads "PATH (deleted)"
        // here, and its maps lines end in the same word after the path.
        let exe = std::fs::read_link("/proc/self/exe").ok().map(|p| {
            let s = p.to_string_lossy();
            std::path::PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
        });
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut out = Vec::new();
        for line in maps.lines() {
            let mut cols = line.split_whitespace();
            let (Some(range), Some(perms)) = (cols.next(), cols.next()) else {
                continue;
            };
            let path = cols.nth(3);
            if !perms.starts_with("r-x") {
                continue;
            }
            if let (Some(exe), Some(path)) = (&exe, path)
                && std::path::Path::new(path) != exe.as_path()
            {
                continue;
            }
            if let Some((a, b)) = range.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                out.push(a..b);
            }
        }
        out
    })
}

/// Turns an offset received from a peer back into a function, refusing anything
/// outside this executable's code.
fn resolve(offset: i64, type_name: &str) -> Result<DeserFn> {
    let addr = (anchor_addr() as i64).wrapping_add(offset) as usize;
    if !code_ranges().iter().any(|r| r.contains(&addr)) {
        return Err(FlintError::BadTask(format!(
            "code offset {offset:#x} for {type_name} lies outside this executable's code"
        )));
    }
    // SAFETY: `addr` is the address of a `DeserFn` in this very executable: the
    // offset was computed by `offset_of` on a `DeserFn` in a process whose build id
    // (hash of the executable's bytes) equals ours — checked by `Shipped::open`
    // before any nested offset is resolved — and position-independent code keeps
    // the distance between two functions of one image constant. The address is
    // further checked to lie in our own r-x mapping above.
    Ok(unsafe { std::mem::transmute::<usize, DeserFn>(addr) })
}

/// Calls the deserializer at `offset` on `bytes` and downcasts its product to `T`.
pub fn deserialize_dyn<T: Any>(offset: i64, bytes: &[u8], type_name: &str) -> Result<T> {
    let f = resolve(offset, type_name)?;
    let any = f(bytes).map_err(|e| FlintError::BadTask(format!("{type_name}: {e}")))?;
    any.downcast::<T>().map(|b| *b).map_err(|_| {
        FlintError::BadTask(format!("{type_name}: deserialized to an unexpected type"))
    })
}

/// A hash of this process's executable (xxh3-128), computed once.
pub fn build_id() -> u128 {
    static ID: OnceLock<u128> = OnceLock::new();
    *ID.get_or_init(|| {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        match std::fs::File::open("/proc/self/exe") {
            Ok(mut f) => {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    match f.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => h.update(&buf[..n]),
                        Err(e) => {
                            tracing::warn!("cannot read own executable for build id: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("cannot open own executable for build id: {e}"),
        }
        h.digest128()
    })
}

/// The outermost shipped object: a stage's task code plus its captured data.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Shipped {
    pub build_id: u128,
    pub type_name: String,
    pub offset: i64,
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// HMAC-SHA256 of everything above under the application's task key, when
    /// the application has one (see [`set_task_key`]).
    pub mac: Option<[u8; 32]>,
}

static TASK_KEY: std::sync::RwLock<Option<std::sync::Arc<Vec<u8>>>> = std::sync::RwLock::new(None);

/// Sets this process's task key (the application's secret, as Spark's
/// SecurityManager generates one per application in standalone mode): every
/// envelope this process ships is then signed with it, and every envelope it
/// opens must carry a valid signature before anything in it is acted on. A
/// shipped task names code in the executable, so only the application's own
/// driver may send one.
pub fn set_task_key(key: Option<Vec<u8>>) {
    let mut k = TASK_KEY.write().unwrap_or_else(|e| e.into_inner());
    *k = key.map(std::sync::Arc::new);
}

fn task_key() -> Option<std::sync::Arc<Vec<u8>>> {
    TASK_KEY.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// 32 random bytes for a new application's task key.
pub fn generate_task_key() -> Result<Vec<u8>> {
    let mut k = vec![0u8; 32];
    getrandom::fill(&mut k).map_err(|e| {
        FlintError::Config(format!("the system's random number source failed: {e}"))
    })?;
    Ok(k)
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl Shipped {
    pub fn new(type_name: &str, deser: DeserFn, payload: Vec<u8>) -> Self {
        let mut s = Shipped {
            build_id: build_id(),
            type_name: type_name.to_string(),
            offset: offset_of(deser),
            payload,
            mac: None,
        };
        if let Some(key) = task_key() {
            s.sign(&key);
        }
        s
    }

    fn mac_of(&self, key: &[u8]) -> HmacSha256 {
        use hmac::{KeyInit, Mac};
        let mut m = <HmacSha256 as KeyInit>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        m.update(b"flint task envelope");
        m.update(&self.build_id.to_le_bytes());
        m.update(&(self.type_name.len() as u64).to_le_bytes());
        m.update(self.type_name.as_bytes());
        m.update(&self.offset.to_le_bytes());
        m.update(&(self.payload.len() as u64).to_le_bytes());
        m.update(&self.payload);
        m
    }

    /// Signs the envelope with `key`.
    pub fn sign(&mut self, key: &[u8]) {
        self.mac = Some(self.signature(key));
    }

    /// The signature `sign` would attach, without changing the envelope.
    pub fn signature(&self, key: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.mac_of(key).finalize().into_bytes());
        out
    }

    /// Checks the envelope's signature under `key` (constant time).
    pub fn verify(&self, key: &[u8]) -> Result<()> {
        use hmac::Mac;
        match self.mac {
            Some(m) if self.mac_of(key).verify_slice(&m).is_ok() => Ok(()),
            Some(_) => Err(FlintError::BadTask(format!(
                "task envelope for {} carries a wrong signature for this application; refusing to run it (only the application's driver may send tasks)",
                self.type_name
            ))),
            None => Err(FlintError::BadTask(format!(
                "task envelope for {} is not signed, and this application requires signed tasks; refusing to run it",
                self.type_name
            ))),
        }
    }

    /// Checks the signature (when this process has a task key) and the build
    /// id, then deserializes to `T`. Nothing in an unauthenticated envelope,
    /// not even its build id, is acted on.
    pub fn open<T: Any>(&self) -> Result<T> {
        if let Some(key) = task_key() {
            self.verify(&key)?;
        }
        let own = build_id();
        if self.build_id != own {
            return Err(FlintError::BuildMismatch {
                executor: own,
                driver: self.build_id,
                type_name: self.type_name.clone(),
            });
        }
        deserialize_dyn(self.offset, &self.payload, &self.type_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deser_string(b: &[u8]) -> std::result::Result<Box<dyn Any + Send>, String> {
        let s: String = postcard::from_bytes(b).map_err(|e| e.to_string())?;
        Ok(Box::new(s))
    }

    #[test]
    fn round_trip_through_offset() {
        let payload = postcard::to_stdvec("hello").unwrap();
        let s = Shipped::new("String", deser_string, payload);
        let back: String = s.open().unwrap();
        assert_eq!(back, "hello");
        // The wrong target type is a clean error.
        let e = s.open::<u32>().unwrap_err().to_string();
        assert!(e.contains("unexpected type"), "{e}");
    }

    #[test]
    fn build_mismatch_is_refused() {
        let mut s = Shipped::new("String", deser_string, postcard::to_stdvec("x").unwrap());
        s.build_id ^= 1;
        let e = s.open::<String>().unwrap_err().to_string();
        assert!(
            e.contains("differs from driver") && e.contains("String"),
            "{e}"
        );
    }

    #[test]
    fn offsets_outside_code_are_refused() {
        let mut s = Shipped::new("String", deser_string, postcard::to_stdvec("x").unwrap());
        s.offset = i64::MAX / 2;
        let e = s.open::<String>().unwrap_err().to_string();
        assert!(e.contains("outside this executable"), "{e}");
    }

    #[test]
    fn signed_envelopes_verify_and_any_change_is_refused() {
        let key = generate_task_key().unwrap();
        let mut s = Shipped::new("String", deser_string, postcard::to_stdvec("x").unwrap());
        assert!(
            s.verify(&key)
                .unwrap_err()
                .to_string()
                .contains("not signed")
        );
        s.sign(&key);
        s.verify(&key).unwrap();
        assert!(s.verify(b"another key of some length").is_err());
        let mut t = s.clone();
        t.offset += 16;
        assert!(
            t.verify(&key)
                .unwrap_err()
                .to_string()
                .contains("wrong signature")
        );
        let mut t = s.clone();
        t.payload.push(0);
        assert!(t.verify(&key).is_err());
        let mut t = s.clone();
        t.type_name.push('!');
        assert!(t.verify(&key).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(crate::util::fuzz_cases(512)))]
        /// A signed envelope with bytes flipped, cut or extended anywhere in its
        /// encoding either fails to decode or fails its signature check, unless
        /// it decodes to exactly the original: no altered envelope ever gets as
        /// far as a code offset.
        #[test]
        fn mutated_signed_envelopes_never_pass(
            flips in proptest::collection::vec((0usize..4096, 1u8..=255), 0..6),
            cut in proptest::option::of(0usize..4096),
            extra in proptest::collection::vec(proptest::num::u8::ANY, 0..4),
        ) {
            let key = b"0123456789abcdef0123456789abcdef".to_vec();
            let mut s = Shipped::new("String", deser_string, postcard::to_stdvec("payload").unwrap());
            s.sign(&key);
            let mut bytes = postcard::to_stdvec(&s).unwrap();
            let n = bytes.len();
            for (at, x) in flips {
                bytes[at % n] ^= x;
            }
            if let Some(c) = cut {
                bytes.truncate(c % (n + 1));
            }
            bytes.extend(extra);
            if let Ok(m) = postcard::from_bytes::<Shipped>(&bytes) {
                let same = m.build_id == s.build_id && m.type_name == s.type_name
                    && m.offset == s.offset && m.payload == s.payload && m.mac == s.mac;
                proptest::prop_assert_eq!(m.verify(&key).is_ok(), same);
            }
        }
    }
}
