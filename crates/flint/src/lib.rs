//! Flint's public API. Applications depend on this crate and write
//! `use flint::prelude::*;`.
//!
//! ```no_run
//! use flint::prelude::*;
//! let sc = FlintContext::new(FlintConf::new().app_name("demo").master("local[2]")).unwrap();
//! let k = 10;
//! let v = sc.parallelize((1..=100).collect::<Vec<i64>>(), 4)
//!     .map(Fn!(move |x: i64| x * k))
//!     .filter(Fn!(|x: &i64| x % 3 == 0))
//!     .collect()
//!     .unwrap();
//! assert_eq!(v.len(), 33);
//! ```
//!
//! Closures given to RDD operations are written `Fn!(|x: T| ...)`: the macro makes
//! their captured variables serializable so tasks can ship to executors.

pub use flint_core::*;

/// Every application linking Flint allocates through mimalloc (the default
/// `mimalloc` feature): a WordCount's per-word `String`s and the engine's
/// per-record boxes are small, short-lived allocations it serves much faster
/// than the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: alloc::MiAlloc = alloc::MiAlloc;

/// mimalloc through its plain entry points whenever the alignment asked for
/// is one every mimalloc block has: 8 bytes (block sizes are multiples of 8
/// and a page's first block is 16-byte aligned). The `mimalloc`
/// crate's allocator always takes the aligned entry points, whose extra
/// checks and out-of-line page allocation showed as 5-7% of the README's
/// WordCount (a `String` per word).
#[cfg(feature = "mimalloc")]
mod alloc {
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    use libmimalloc_sys as mi;

    /// Alignment every mimalloc block has.
    const BLOCK_ALIGN: usize = 8;

    pub struct MiAlloc;

    // SAFETY: every method forwards to mimalloc with the size asked for and
    // an alignment at least the layout's (plain calls only when the layout
    // needs no more than every block has); memory is freed by mi_free,
    // which takes blocks from any of these entry points.
    unsafe impl GlobalAlloc for MiAlloc {
        #[inline]
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: as above.
            unsafe {
                if l.align() <= BLOCK_ALIGN {
                    mi::mi_malloc(l.size()).cast()
                } else {
                    mi::mi_malloc_aligned(l.size(), l.align()).cast()
                }
            }
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
            // SAFETY: as above.
            unsafe {
                if l.align() <= BLOCK_ALIGN {
                    mi::mi_zalloc(l.size()).cast()
                } else {
                    mi::mi_zalloc_aligned(l.size(), l.align()).cast()
                }
            }
        }

        #[inline]
        unsafe fn dealloc(&self, p: *mut u8, _l: Layout) {
            // SAFETY: `p` came from this allocator (GlobalAlloc's contract).
            unsafe { mi::mi_free(p.cast::<c_void>()) }
        }

        #[inline]
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: `p` came from this allocator with layout `l`; the
            // result keeps the alignment as `alloc` does.
            unsafe {
                if l.align() <= BLOCK_ALIGN {
                    mi::mi_realloc(p.cast(), new_size).cast()
                } else {
                    mi::mi_realloc_aligned(p.cast(), new_size, l.align()).cast()
                }
            }
        }
    }
}

/// An option number libmimalloc-sys does not export, placed by its exported
/// neighbour in `mi_option_e` (its `mimalloc.h`, v2 and v3 alike):
/// `arena_eager_commit` comes two before `allow_large_os_pages`.
#[cfg(feature = "mimalloc")]
mod mi_options {
    pub const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t =
        libmimalloc_sys::mi_option_large_os_pages - 2;
}

/// Arenas are committed as they are used, not up front. Freed memory goes
/// back to the OS after mimalloc's own delay: returning it at once
/// (`purge_delay` 0) halved WordCount's peak RSS (77 to 40 MiB) at the same
/// speed, but made Sort 10M fault its pages in again and again (2 s of system
/// time; 3.9-4.0 s against 3.4 s, measured alternately), so it is not set.
#[cfg(feature = "mimalloc")]
fn tune_allocator() {
    // SAFETY: mi_option_set stores a value in mimalloc's option table (an
    // atomic store); the number is a valid option (checked by the test below
    // against its documented default).
    unsafe {
        libmimalloc_sys::mi_option_set(mi_options::ARENA_EAGER_COMMIT, 0);
    }
}

/// What Spark's default log4j configuration does: warnings and errors go to
/// standard error, so a driver that waits for resources, loses an executor or
/// retries a fetch says so instead of going quiet (an executor's lands in its
/// stderr file in the Worker's work dir). `FLINT_LOG` (then `RUST_LOG`) sets
/// the filter, as `info` or `flint_cluster=debug`. Installed as the first
/// context is created, unless the application has installed a subscriber by
/// then (in an executor, at once).
#[cfg(feature = "logging")]
fn install_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use tracing_subscriber::EnvFilter;
        let filter = std::env::var("FLINT_LOG")
            .ok()
            .and_then(|v| EnvFilter::try_new(v).ok())
            .or_else(|| EnvFilter::try_from_default_env().ok())
            .unwrap_or_else(|| EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init();
    });
}

/// As Spark's shutdown hooks: a driver stopped by Ctrl-C, `kill` or a closed
/// terminal (SIGINT, SIGTERM, SIGHUP) exits through `exit`, so its local dirs
/// and any `local-cluster` work dir are removed (`flint_core::exit_cleanup`)
/// and its in-process Workers' executors follow it; the exit status is 128
/// plus the signal's number, as the default action would report. Signals
/// the parent set to be ignored (`nohup`) are left alone;
/// `init_keeping_signals` leaves all three to the application.
fn exit_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // A signal the parent set to be ignored stays ignored (`nohup`, or a
    // shell's background job ignoring SIGINT).
    let watched: Vec<i32> = [SIGINT, SIGTERM, SIGHUP]
        .into_iter()
        .filter(|&sig| !ignored(sig))
        .collect();
    let mut signals = match signal_hook::iterator::Signals::new(&watched) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "flint: cannot watch for SIGINT/SIGTERM ({e}); temp dirs may be left behind on Ctrl-C"
            );
            return;
        }
    };
    let spawned = std::thread::Builder::new()
        .name("flint-signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                std::process::exit(128 + sig);
            }
        });
    if let Err(e) = spawned {
        eprintln!(
            "flint: cannot start the signal thread ({e}); temp dirs may be left behind on Ctrl-C"
        );
    }
}

/// Whether `sig`'s disposition is SIG_IGN.
fn ignored(sig: i32) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: sigaction with a null new action only reads the current one
    // into `old`, a zeroed sigaction we own; `sig` is a valid signal number.
    let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
    // SAFETY: on success the kernel filled `old`; it was zeroed before, so
    // it is initialized either way.
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

/// See `flint_cluster::submit::is_flint_application`.
static APPLICATION_MARKER: [u8; 31] = *b"\0flint-application-calls-init\0\0";

/// Call first in `main`. In a driver it installs the cluster backend (so
/// `flint://` and `local-cluster[...]` masters work) and returns; started by a
/// Worker as an executor (`FLINT_ROLE=executor`), the same binary runs the
/// executor and exits instead of returning to user code.
///
/// A driver also exits on SIGINT, SIGTERM and SIGHUP (unless they are
/// ignored) with its temp dirs removed, as Spark's shutdown hooks do; an
/// application that handles those signals itself (a graceful shutdown on
/// Ctrl-C) calls [`init_keeping_signals`] instead.
pub fn init() {
    init_with(true)
}

/// As [`init`], but leaves SIGINT, SIGTERM and SIGHUP to the application: on
/// such a signal its temp dirs are removed only if it then exits normally
/// (returns from `main` or calls `std::process::exit`).
pub fn init_keeping_signals() {
    init_with(false)
}

fn init_with(signals: bool) {
    // Kept in every binary that calls init: `flint submit` looks for it to
    // tell a Flint application from any other program.
    std::hint::black_box(&APPLICATION_MARKER);
    #[cfg(feature = "mimalloc")]
    tune_allocator();
    flint_cluster::register();
    if std::env::var(flint_core::executor::ROLE_VAR).as_deref() == Ok("executor")
        && std::env::var(flint_cluster::DRIVER_URL_VAR).is_ok()
    {
        #[cfg(feature = "logging")]
        install_logging();
        flint_cluster::executor::run();
    }
    // In a driver, as its context is created: after the application's own
    // logging set-up, if it has one.
    #[cfg(feature = "logging")]
    flint_core::context::on_new_context(install_logging);
    if signals {
        exit_on_signals();
    }
    flint_core::init();
}

/// `flint submit` as a library call (the `flint` command's `submit`).
pub use flint_cluster::submit;

/// Counters of the cluster backend in this process.
pub use flint_cluster::metrics as cluster_metrics;

pub mod prelude {
    pub use flint_core::rdd::{BoxIter, Rdd};
    pub use flint_core::{
        Accumulator, Broadcast, Data, FlintConf, FlintContext, FlintError, Fn, Func, Key,
        StorageLevel,
    };
}

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    #[test]
    fn the_allocator_option_numbers_are_mimallocs() {
        // SAFETY: mi_option_get only reads the option table.
        let eager =
            unsafe { libmimalloc_sys::mi_option_get(super::mi_options::ARENA_EAGER_COMMIT) };
        // Its default (2), or 0 once set.
        assert!([0, 2].contains(&eager), "arena_eager_commit = {eager}");
        super::tune_allocator();
        // SAFETY: as above.
        unsafe {
            assert_eq!(
                libmimalloc_sys::mi_option_get(super::mi_options::ARENA_EAGER_COMMIT),
                0
            );
        }
    }
}
