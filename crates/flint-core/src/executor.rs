//! Executor mode of the application binary (the same-binary model).
//!
//! A worker starts the user's own executable with `FLINT_ROLE=executor`; the
//! application calls `flint::init()` first thing in `main`, which in executor
//! mode runs the cluster executor (`flint_cluster::executor`, over RPC to its
//! driver) and exits instead of returning to user code. What is left here is
//! the role variable and the check that a process started in that role was
//! given a driver to serve.

/// Environment variable that selects the role of a started binary.
pub const ROLE_VAR: &str = "FLINT_ROLE";

/// Called by `flint::init()` after the cluster executor had its chance:
/// returns at once in a driver; a process started as an executor that got
/// here has no driver to serve, and exits with the reason.
pub fn init() {
    match std::env::var(ROLE_VAR).as_deref() {
        Ok("executor") => {
            eprintln!(
                "flint executor: started without FLINT_DRIVER_URL; executors are started by a Worker for a driver"
            );
            std::process::exit(3);
        }
        Ok(other) => {
            eprintln!("flint: unknown {ROLE_VAR}={other}; expected 'executor' or unset");
            std::process::exit(2);
        }
        Err(_) => {}
    }
}
