//! Application binaries by content. A binary is named by its SHA-256, never
//! by a path from a message: the driver serves its own executable, the Master
//! the binaries `flint submit` uploaded; a Worker fetches one in bounded parts
//! into `work_dir/binaries/<sha256>`, checks the hash before the file becomes
//! visible under that name, and reuses it for every later executor or driver
//! of the same build (so a second application costs no copy).

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flint_rpc::{Endpoint, EndpointCtx, Peer, Replier, RpcEnv};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::messages::BinaryRef;

pub const BINARY_ENDPOINT: &str = "Binaries";
/// Bytes asked for at once (well under the default frame limit).
pub const CHUNK: u64 = 1 << 20;
/// No application binary is larger.
pub const MAX_BINARY_SIZE: u64 = 4 << 30;

#[derive(Debug, Serialize, Deserialize)]
pub enum BinaryMsg {
    /// Ask; answered with `Result<Vec<u8>, String>`.
    Fetch {
        sha256: String,
        offset: u64,
        len: u64,
    },
}

/// 64 lower-case hex digits.
pub fn valid_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The files one process serves, by hash.
#[derive(Clone, Default)]
pub struct Served(Arc<Mutex<HashMap<String, PathBuf>>>);

impl Served {
    pub fn insert(&self, sha256: String, path: PathBuf) {
        self.0.lock().insert(sha256, path);
    }

    pub fn contains(&self, sha256: &str) -> bool {
        self.0.lock().contains_key(sha256)
    }

    /// Re-serves binaries a previous run stored in `dir`, by the hash they
    /// are named after (not re-hashed here, to keep start-up fast: a Worker
    /// checks a binary's hash before every launch).
    pub fn load(&self, dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            // Regular, non-empty files only (no symlinks); a damaged one is
            // replaced by the next upload of its hash (see `Uploads::part`).
            let regular =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0);
            if valid_sha256(&name) && regular {
                self.insert(name, path);
            } else if name.contains(".part") {
                // An upload cut short by the last run's end.
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Marks a binary used now (its file's time), so retention keeps it.
    pub fn touch(&self, sha256: &str) {
        if let Some(p) = self.0.lock().get(sha256) {
            touch(p);
        }
    }

    fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        self.0.lock().get(sha256).cloned()
    }

    /// Deletes binaries beyond the `retained` most recently used, except
    /// those in `needed` (drivers waiting or running); returns their hashes.
    pub fn prune(
        &self,
        needed: &std::collections::HashSet<String>,
        retained: usize,
    ) -> Vec<String> {
        let mut map = self.0.lock();
        let now = std::time::SystemTime::now();
        let mut others: Vec<(std::time::SystemTime, String)> = map
            .iter()
            .filter(|(sha, _)| !needed.contains(*sha))
            .map(|(sha, p)| {
                let t = std::fs::metadata(p)
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (t, sha.clone())
            })
            .filter(|(t, _)| now.duration_since(*t).is_ok_and(|age| age >= PRUNE_GRACE))
            .collect();
        others.sort_by(|a, b| b.cmp(a));
        let gone: Vec<String> = others.into_iter().skip(retained).map(|(_, s)| s).collect();
        for sha in &gone {
            if let Some(p) = map.remove(sha)
                && let Err(e) = std::fs::remove_file(&p)
            {
                tracing::warn!("cannot remove old binary {}: {e}", p.display());
            }
        }
        gone
    }
}

/// Sets a file's modification time to now. Opened read-only: a running
/// executable cannot be opened for writing (ETXTBSY), and a binary in use
/// is exactly the one to keep.
fn touch(p: &Path) {
    if let Err(e) =
        std::fs::File::open(p).and_then(|f| f.set_modified(std::time::SystemTime::now()))
    {
        tracing::warn!("cannot mark {} as used: {e}", p.display());
    }
}

/// Binaries stored or used this recently are never pruned: an upload's
/// submission follows it, and another upload in between must not delete it.
pub const PRUNE_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Serves [`Served`] files in parts to whoever holds the RPC secret.
pub struct BinaryServer(pub Served);

impl Endpoint for BinaryServer {
    type Msg = BinaryMsg;

    fn receive(
        &mut self,
        _: &EndpointCtx<BinaryMsg>,
        _: Peer,
        msg: BinaryMsg,
        reply: Option<Replier>,
    ) {
        let BinaryMsg::Fetch {
            sha256,
            offset,
            len,
        } = msg;
        let Some(rp) = reply else { return };
        let path = self.0.0.lock().get(&sha256).cloned();
        tokio::task::spawn_blocking(move || {
            let r = match path {
                None => Err(format!("no binary {sha256} is served here")),
                Some(_) if len > CHUNK => Err(format!("at most {CHUNK} bytes at once")),
                Some(p) => read_at(&p, offset, len)
                    .map(serde_bytes::ByteBuf::from)
                    .map_err(|e| e.to_string()),
            };
            rp.reply(&r);
        });
    }
}

fn read_at(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(std::io::Error::other(format!(
            "asked for {len} bytes at {offset}, the file has {}",
            buf.len()
        )));
    }
    Ok(buf)
}

/// The largest part to ask for or send over `env`: `CHUNK`, or less when
/// frames are smaller (`flint.rpc.message.maxSize` of 1 MiB).
pub fn chunk_for(env: &RpcEnv) -> u64 {
    CHUNK.min((env.conf().max_message_size as u64 / 2).max(4096))
}

/// Whether the file at `path` has SHA-256 `sha256`.
fn holds(path: &Path, sha256: &str) -> bool {
    crate::sha256_file(path).is_ok_and(|got| got == sha256)
}

/// Where a worker keeps binaries.
pub fn cache_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("binaries")
}

/// The local copy of `r` in `dir`, fetched from `r.source` if missing, its
/// hash checked before it gets its name.
pub async fn ensure(env: &RpcEnv, dir: &Path, r: &BinaryRef) -> Result<PathBuf, String> {
    if !valid_sha256(&r.sha256) {
        return Err(format!("'{}' is not a SHA-256", r.sha256));
    }
    if r.size > MAX_BINARY_SIZE {
        return Err(format!(
            "an application binary of {} bytes is over the limit ({MAX_BINARY_SIZE})",
            r.size
        ));
    }
    let dst = dir.join(&r.sha256);
    if dst.exists() {
        // Checked at every use: what runs is what the hash names, even if
        // the cache was tampered with since.
        let (d, want) = (dst.clone(), r.sha256.clone());
        let same = tokio::task::spawn_blocking(move || holds(&d, &want))
            .await
            .map_err(|e| e.to_string())?;
        if same {
            // Used now: the Worker's cleanup keeps binaries used within
            // flint.worker.cleanup.appDataTtl.
            touch(&dst);
            return Ok(dst);
        }
        tracing::warn!(
            "{} does not match its hash; fetching it again",
            dst.display()
        );
        let _ = std::fs::remove_file(&dst);
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // A unique part file: fetches of the same binary at once do not collide.
    let part = tempfile::Builder::new()
        .prefix(&format!("{}.part", r.sha256))
        .tempfile_in(dir)
        .map_err(|e| format!("cannot create a file in {}: {e}", dir.display()))?;
    let (mut file, part_path) = part.into_parts();
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut offset = 0u64;
    let chunk = chunk_for(env);
    while offset < r.size {
        let len = (r.size - offset).min(chunk);
        let got: Result<serde_bytes::ByteBuf, String> = env
            .ask(
                &r.source,
                BINARY_ENDPOINT,
                &BinaryMsg::Fetch {
                    sha256: r.sha256.clone(),
                    offset,
                    len,
                },
                Duration::from_secs(120),
            )
            .await
            .map_err(|e| format!("cannot fetch binary {} from {}: {e}", r.sha256, r.source))?;
        let bytes = got.map_err(|e| format!("{} refused binary {}: {e}", r.source, r.sha256))?;
        if bytes.len() as u64 != len {
            return Err(format!(
                "{} sent {} bytes of the {len} asked for",
                r.source,
                bytes.len()
            ));
        }
        hash.update(&bytes);
        file.write_all(&bytes)
            .map_err(|e| format!("cannot write {}: {e}", part_path.display()))?;
        offset += len;
    }
    let got = crate::hex(&hash.finalize());
    if got != r.sha256 {
        return Err(format!(
            "the binary fetched from {} has SHA-256 {got}, not {}",
            r.source, r.sha256
        ));
    }
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot make {} executable: {e}", part_path.display()))?;
    file.sync_all()
        .map_err(|e| format!("cannot write {}: {e}", part_path.display()))?;
    drop(file);
    // Never replace a copy another launch just stored (and may be running:
    // its process would then see its own executable as deleted).
    match part_path.persist_noclobber(&dst) {
        Ok(()) => Ok(dst),
        Err(e) if dst.exists() => {
            drop(e);
            // Stored by another launch meanwhile: checked like any copy.
            if holds(&dst, &r.sha256) {
                Ok(dst)
            } else {
                Err(format!("{} does not match its hash", dst.display()))
            }
        }
        Err(e) => Err(format!("cannot store {}: {e}", dst.display())),
    }
}

/// Uploads in progress at the Master: each sha from one uploader at a time,
/// written in order, checked before it is served.
#[derive(Default)]
pub struct Uploads {
    /// By (hash, uploader): two uploaders of one binary do not collide.
    active: HashMap<(String, flint_rpc::RpcAddress), Upload>,
}

struct Upload {
    last_part: std::time::Instant,
    size: u64,
    written: u64,
    file: tempfile::NamedTempFile,
    hash: sha2::Sha256,
}

/// Uploads accepted at once.
const MAX_UPLOADS: usize = 4;
/// An upload without a part for this long is abandoned (its slot and file
/// freed), so a peer cannot hold a slot by going quiet.
const UPLOAD_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

impl Uploads {
    /// Takes the part at `offset`; `Ok(true)` once the whole binary is stored
    /// (and served) under its hash in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn part(
        &mut self,
        dir: &Path,
        served: &Served,
        from: &flint_rpc::RpcAddress,
        sha256: &str,
        size: u64,
        offset: u64,
        data: &[u8],
    ) -> Result<bool, String> {
        use sha2::Digest;
        if !valid_sha256(sha256) {
            return Err(format!("'{sha256}' is not a SHA-256 in lower-case hex"));
        }
        if let Some(p) = served.path_of(sha256) {
            // A stored copy of the size this upload names is the binary.
            // Otherwise (cut short when the machine went down, or the size
            // is wrong) the upload goes ahead, and only a whole upload that
            // matches the hash replaces the stored copy (an atomic rename):
            // an upload never deletes anything first.
            if std::fs::metadata(&p).is_ok_and(|m| m.len() == size) {
                served.touch(sha256);
                return Ok(true);
            }
        }
        if size == 0 || size > MAX_BINARY_SIZE {
            return Err(format!(
                "a binary of {size} bytes: must be 1 to {MAX_BINARY_SIZE}"
            ));
        }
        if data.is_empty() || data.len() as u64 > CHUNK || offset + data.len() as u64 > size {
            return Err(format!(
                "a part of {} bytes at {offset} does not fit",
                data.len()
            ));
        }
        let now = std::time::Instant::now();
        self.active
            .retain(|_, u| now.duration_since(u.last_part) < UPLOAD_IDLE);
        let key = (sha256.to_string(), from.clone());
        if offset == 0 {
            // A peer uploads one binary at a time: a new one replaces the last.
            self.active.retain(|(_, f), _| f != from);
            if self.active.len() >= MAX_UPLOADS {
                return Err("too many uploads in progress; try again shortly".into());
            }
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let file = tempfile::Builder::new()
                .prefix(&format!("{sha256}.part"))
                .tempfile_in(dir)
                .map_err(|e| format!("cannot store an upload: {e}"))?;
            self.active.insert(
                key.clone(),
                Upload {
                    last_part: now,
                    size,
                    written: 0,
                    file,
                    hash: sha2::Sha256::new(),
                },
            );
        }
        let Some(u) = self.active.get_mut(&key) else {
            return Err(format!(
                "no upload of {sha256} in progress: start at offset 0"
            ));
        };
        if u.size != size || u.written != offset {
            return Err(format!(
                "out-of-order part: {} bytes of {} written, part at {offset}",
                u.written, u.size
            ));
        }
        u.last_part = now;
        if let Err(e) = u.file.write_all(data) {
            self.active.remove(&key);
            return Err(format!("cannot store an upload: {e}"));
        }
        u.hash.update(data);
        u.written += data.len() as u64;
        if u.written < u.size {
            return Ok(false);
        }
        let Some(u) = self.active.remove(&key) else {
            return Err("upload vanished".into());
        };
        let got = crate::hex(&u.hash.finalize());
        if got != sha256 {
            return Err(format!("the upload has SHA-256 {got}, not {sha256}"));
        }
        let dst = dir.join(sha256);
        // On disk before it is served: a restarted Master serves what it kept.
        u.file
            .as_file()
            .sync_all()
            .map_err(|e| format!("cannot store an upload: {e}"))?;
        u.file
            .persist(&dst)
            .map_err(|e| format!("cannot store {}: {e}", dst.display()))?;
        served.insert(sha256.to_string(), dst);
        Ok(true)
    }

    /// Forgets uploads from a peer that went away.
    pub fn forget(&mut self, from: &flint_rpc::RpcAddress) {
        self.active.retain(|(_, f), _| f != from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_binary_is_marked_used() {
        struct Reaped(std::process::Child);
        impl Drop for Reaped {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("sleeper");
        std::fs::copy("/bin/sleep", &exe).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 24 * 3600);
        std::fs::File::open(&exe)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // Running: it cannot be opened for writing (ETXTBSY).
        let _running = Reaped(std::process::Command::new(&exe).arg("30").spawn().unwrap());
        touch(&exe);
        let age = std::fs::metadata(&exe)
            .unwrap()
            .modified()
            .unwrap()
            .elapsed()
            .unwrap_or_default();
        assert!(
            age < std::time::Duration::from_secs(60),
            "not renewed: {age:?}"
        );
    }

    #[test]
    fn retention_keeps_needed_and_recent_binaries_and_reloads_them() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).map(|i| sha(&[i])).collect();
        let t0 = std::time::SystemTime::now() - std::time::Duration::from_secs(1000);
        for (i, n) in names.iter().enumerate() {
            let p = dir.path().join(n);
            std::fs::write(&p, [i as u8]).unwrap();
            // names[3] is the most recently used.
            let f = std::fs::File::options().append(true).open(&p).unwrap();
            f.set_modified(t0 + std::time::Duration::from_secs(10 * i as u64))
                .unwrap();
        }
        std::fs::write(dir.path().join(format!("{}.part123", names[0])), "x").unwrap();
        let served = Served::default();
        served.load(dir.path());
        assert!(names.iter().all(|n| served.contains(n)));
        assert!(
            !dir.path().join(format!("{}.part123", names[0])).exists(),
            "a cut-short upload is removed"
        );
        // names[1] is used again: it becomes recent, within the grace period
        // that keeps it whatever the count.
        served.touch(&names[1]);
        let needed = std::collections::HashSet::from([names[0].clone()]);
        let mut gone = served.prune(&needed, 1);
        gone.sort();
        assert_eq!(gone, vec![names[2].clone()]);
        assert!(!dir.path().join(&names[2]).exists());
        for kept in [&names[0], &names[1], &names[3]] {
            assert!(served.contains(kept) && dir.path().join(kept).exists());
        }
        // A damaged copy (cut short) is replaced by the next upload of it.
        let data = b"the real binary".to_vec();
        let real = sha(&data);
        std::fs::write(dir.path().join(&real), b"the re").unwrap();
        served.insert(real.clone(), dir.path().join(&real));
        let mut uploads = Uploads::default();
        let from = flint_rpc::RpcAddress::new("127.0.0.1", 1);
        let done = uploads
            .part(
                dir.path(),
                &served,
                &from,
                &real,
                data.len() as u64,
                0,
                &data,
            )
            .unwrap();
        assert!(done);
        assert_eq!(std::fs::read(dir.path().join(&real)).unwrap(), data);
        // A stranger naming its hash with another size deletes nothing: a
        // size of 0 is refused, and an upload whose bytes do not match the
        // hash fails without touching the stored copy.
        let stranger = flint_rpc::RpcAddress::new("127.0.0.1", 2);
        assert!(
            uploads
                .part(dir.path(), &served, &stranger, &real, 0, 0, b"x")
                .is_err()
        );
        assert!(
            uploads
                .part(dir.path(), &served, &stranger, &real, 3, 0, b"abc")
                .is_err()
        );
        assert!(served.contains(&real));
        assert_eq!(std::fs::read(dir.path().join(&real)).unwrap(), data);
    }

    fn sha(data: &[u8]) -> String {
        use sha2::Digest;
        crate::hex(&sha2::Sha256::digest(data))
    }

    #[tokio::test]
    async fn parts_fit_the_frame_limit() {
        let small = RpcEnv::client(flint_rpc::RpcConf {
            max_message_size: 1 << 20,
            ..flint_rpc::RpcConf::default()
        });
        assert_eq!(chunk_for(&small), 512 << 10);
        let default = RpcEnv::client(flint_rpc::RpcConf::default());
        assert_eq!(chunk_for(&default), CHUNK);
    }

    #[test]
    fn uploads_are_checked_in_order_and_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let served = Served::default();
        let mut up = Uploads::default();
        let a = flint_rpc::RpcAddress::new("127.0.0.1", 1);
        let b = flint_rpc::RpcAddress::new("127.0.0.1", 2);
        let data = b"0123456789".to_vec();
        let h = sha(&data);
        assert!(
            !up.part(dir.path(), &served, &a, &h, 10, 0, &data[..4])
                .unwrap()
        );
        // Another peer cannot interleave; a gap is refused.
        assert!(
            up.part(dir.path(), &served, &b, &h, 10, 4, &data[4..])
                .is_err()
        );
        assert!(
            up.part(dir.path(), &served, &a, &h, 10, 6, &data[6..])
                .is_err()
        );
        assert!(
            up.part(dir.path(), &served, &a, &h, 10, 4, &data[4..])
                .unwrap()
        );
        assert_eq!(std::fs::read(dir.path().join(&h)).unwrap(), data);
        assert!(served.contains(&h));
        // Wrong content for a hash: refused, nothing served.
        let other = sha(b"something else");
        let e = up
            .part(dir.path(), &served, &a, &other, 10, 0, &data)
            .unwrap_err();
        assert!(e.contains("not"), "{e}");
        assert!(!served.contains(&other));
        assert!(!dir.path().join(&other).exists());
        // Two uploaders of one binary do not collide, and one peer holds
        // one slot however many uploads it starts.
        let two = b"two uploaders".to_vec();
        let h2 = sha(&two);
        assert!(
            !up.part(dir.path(), &served, &a, &h2, 13, 0, &two[..5])
                .unwrap()
        );
        assert!(
            !up.part(dir.path(), &served, &b, &h2, 13, 0, &two[..5])
                .unwrap()
        );
        assert!(
            up.part(dir.path(), &served, &b, &h2, 13, 5, &two[5..])
                .unwrap()
        );
        assert!(served.contains(&h2));
        let mallory = flint_rpc::RpcAddress::new("127.0.0.1", 9);
        for i in 0..10u8 {
            let fake = format!("{:064x}", i);
            assert!(
                !up.part(dir.path(), &served, &mallory, &fake, 100, 0, &[i; 5])
                    .unwrap()
            );
        }
        assert!(up.active.len() <= 2, "{} slots held", up.active.len());
        // A name that is not a hash never becomes a path.
        assert!(
            up.part(dir.path(), &served, &a, "../../etc/x", 10, 0, &data)
                .is_err()
        );
    }
}
