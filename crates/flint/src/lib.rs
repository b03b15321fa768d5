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
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// See `flint_cluster::submit::is_flint_application`.
static APPLICATION_MARKER: [u8; 31] = *b"\0flint-application-calls-init\0\0";

/// Call first in `main`. In a driver it installs the cluster backend (so
/// `flint://` and `local-cluster[...]` masters work) and returns; started by a
/// Worker as an executor (`FLINT_ROLE=executor`), the same binary runs the
/// executor and exits instead of returning to user code.
pub fn init() {
    // Kept in every binary that calls init: `flint submit` looks for it to
    // tell a Flint application from any other program.
    std::hint::black_box(&APPLICATION_MARKER);
    flint_cluster::register();
    if std::env::var(flint_core::executor::ROLE_VAR).as_deref() == Ok("executor")
        && std::env::var(flint_cluster::DRIVER_URL_VAR).is_ok()
    {
        flint_cluster::executor::run();
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
