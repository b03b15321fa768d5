//! Temporary directories removed when the process exits, as Spark deletes its
//! local dirs in a shutdown hook. A context that is never dropped (one kept in
//! a `static`, the usual pattern in test suites, or one still referenced by a
//! thread when `main` returns or a test fails) would otherwise leave its
//! shuffle files, blocks and in-process cluster behind at every exit.

use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Once;

static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static HOOK: Once = Once::new();

extern "C" fn remove_live_dirs() {
    // try_lock: never block an exiting process.
    if let Some(dirs) = LIVE.try_lock() {
        for d in dirs.iter() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn register(dir: &Path) {
    HOOK.call_once(|| {
        // SAFETY: atexit only records a pointer to a plain `extern "C"`
        // function with no arguments, which lives as long as the program.
        let _ = unsafe { nix::libc::atexit(remove_live_dirs) };
    });
    LIVE.lock().push(dir.to_path_buf());
}

fn forget(dir: &Path) {
    LIVE.lock().retain(|d| d != dir);
}

/// A temporary directory removed when dropped or, if it never is, when the
/// process exits normally (a process killed by a signal cannot clean up).
pub struct ExitCleanedDir {
    // Dropped after `drop` below has forgotten it: removal happens once.
    dir: tempfile::TempDir,
}

impl ExitCleanedDir {
    pub fn new(dir: tempfile::TempDir) -> Self {
        register(dir.path());
        ExitCleanedDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ExitCleanedDir {
    fn drop(&mut self) {
        forget(self.dir.path());
    }
}
