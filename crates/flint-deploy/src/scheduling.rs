//! The Master's executor placement (Spark's `scheduleExecutorsOnWorkers`) as a
//! pure function over plain numbers, so it can be checked against Spark's cases.

/// Free resources of one usable worker.
#[derive(Clone, Copy, Debug)]
pub struct WorkerFree {
    pub cores_free: u32,
    pub memory_free_mb: u64,
}

/// What one application still wants.
#[derive(Clone, Copy, Debug)]
pub struct AppDemand {
    pub cores_left: u32,
    /// `None`: one executor per worker taking all cores assigned to it.
    pub cores_per_executor: Option<u32>,
    pub memory_per_executor_mb: u64,
    /// Executors the app may still get (dynamic-allocation cap; `usize::MAX` if none).
    pub executor_limit: usize,
}

/// Cores to assign on each worker (in the given order). With `spread_out`, cores
/// go round-robin one executor's worth at a time; otherwise each worker is filled
/// before the next. Memory is never over-committed and cores are assigned in units
/// of `cores_per_executor` (SPARK-8881).
pub fn schedule_executors_on_workers(
    app: AppDemand,
    workers: &[WorkerFree],
    spread_out: bool,
) -> Vec<u32> {
    let min_cores = app.cores_per_executor.unwrap_or(1).max(1);
    let one_per_worker = app.cores_per_executor.is_none();
    let mem = app.memory_per_executor_mb;
    let n = workers.len();
    let mut assigned_cores = vec![0u32; n];
    let mut assigned_execs = vec![0usize; n];
    let total_free: u64 = workers.iter().map(|w| u64::from(w.cores_free)).sum();
    let mut to_assign = u64::from(app.cores_left).min(total_free);

    let can_launch = |pos: usize, to_assign: u64, cores: &[u32], execs: &[usize]| -> bool {
        let keep = to_assign >= u64::from(min_cores);
        let enough_cores = workers[pos].cores_free.saturating_sub(cores[pos]) >= min_cores;
        let launching_new = !one_per_worker || execs[pos] == 0;
        if launching_new {
            let used_mem = execs[pos] as u64 * mem;
            let enough_mem = workers[pos].memory_free_mb.saturating_sub(used_mem) >= mem;
            let under_limit = execs.iter().sum::<usize>() < app.executor_limit;
            keep && enough_cores && enough_mem && under_limit
        } else {
            keep && enough_cores
        }
    };

    let mut free: Vec<usize> = (0..n)
        .filter(|&p| can_launch(p, to_assign, &assigned_cores, &assigned_execs))
        .collect();
    while !free.is_empty() {
        for &pos in &free {
            let mut keep = true;
            while keep && can_launch(pos, to_assign, &assigned_cores, &assigned_execs) {
                to_assign -= u64::from(min_cores);
                assigned_cores[pos] += min_cores;
                if one_per_worker {
                    assigned_execs[pos] = 1;
                } else {
                    assigned_execs[pos] += 1;
                }
                // Spreading out: one executor's worth here, then the next worker.
                if spread_out {
                    keep = false;
                }
            }
        }
        free.retain(|&p| can_launch(p, to_assign, &assigned_cores, &assigned_execs));
    }
    assigned_cores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: usize, cores: u32, mem: u64) -> Vec<WorkerFree> {
        vec![
            WorkerFree {
                cores_free: cores,
                memory_free_mb: mem,
            };
            n
        ]
    }

    fn app(cores_left: u32, cpe: Option<u32>, mem: u64) -> AppDemand {
        AppDemand {
            cores_left,
            cores_per_executor: cpe,
            memory_per_executor_mb: mem,
            executor_limit: usize::MAX,
        }
    }

    // The cases below follow Spark's MasterSuite (3 workers x 10 cores, 4 GiB).
    const W: u32 = 10;
    const M: u64 = 4096;

    #[test]
    fn basic_spread_and_consolidated() {
        let w = workers(3, W, M);
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, None, 1024), &w, true),
            vec![10, 10, 10]
        );
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, None, 1024), &w, false),
            vec![10, 10, 10]
        );
    }

    #[test]
    fn max_cores() {
        let w = workers(3, W, M);
        assert_eq!(
            schedule_executors_on_workers(app(12, None, 1024), &w, true),
            vec![4, 4, 4]
        );
        assert_eq!(
            schedule_executors_on_workers(app(12, None, 1024), &w, false),
            vec![10, 2, 0]
        );
        assert_eq!(
            schedule_executors_on_workers(app(8, None, 1024), &w, true),
            vec![3, 3, 2]
        );
        assert_eq!(
            schedule_executors_on_workers(app(8, None, 1024), &w, false),
            vec![8, 0, 0]
        );
    }

    #[test]
    fn cores_per_executor() {
        let w = workers(3, W, M);
        // 2 cores per executor, 1 GiB each: memory allows 4 executors per worker.
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, Some(2), 1024), &w, true),
            vec![8, 8, 8]
        );
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, Some(2), 1024), &w, false),
            vec![8, 8, 8]
        );
        // With small executors, cores are the limit: 5 executors of 2 per worker.
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, Some(2), 256), &w, true),
            vec![10, 10, 10]
        );
        // 3 cores per executor leave a remainder of 1 per worker.
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, Some(3), 256), &w, true),
            vec![9, 9, 9]
        );
    }

    #[test]
    fn cores_per_executor_and_max_cores() {
        let w = workers(3, W, M);
        assert_eq!(
            schedule_executors_on_workers(app(4, Some(2), 1024), &w, true),
            vec![2, 2, 0]
        );
        assert_eq!(
            schedule_executors_on_workers(app(4, Some(2), 1024), &w, false),
            vec![4, 0, 0]
        );
        // Max cores not a multiple of the executor size: the remainder stays unused.
        assert_eq!(
            schedule_executors_on_workers(app(7, Some(2), 1024), &w, true),
            vec![2, 2, 2]
        );
        // SPARK-8881: 4 workers x 16 cores, max 48, 16 per executor: 3 executors.
        let w16 = workers(4, 16, 1 << 20);
        assert_eq!(
            schedule_executors_on_workers(app(48, Some(16), 1024), &w16, true),
            vec![16, 16, 16, 0]
        );
    }

    #[test]
    fn memory_limits() {
        // Executors of 3 GiB on 4 GiB workers: one executor each.
        let w = workers(3, W, M);
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, Some(2), 3072), &w, true),
            vec![2, 2, 2]
        );
        // Without cores per executor memory only gates the first executor.
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, None, 3072), &w, true),
            vec![10, 10, 10]
        );
    }

    #[test]
    fn not_enough_resources() {
        let w = workers(3, W, 512);
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, None, 1024), &w, true),
            vec![0, 0, 0]
        );
        let w = workers(3, 1, M);
        assert_eq!(
            schedule_executors_on_workers(app(u32::MAX, Some(2), 1024), &w, true),
            vec![0, 0, 0]
        );
        assert_eq!(
            schedule_executors_on_workers(app(1, Some(2), 1024), &workers(3, W, M), true),
            vec![0, 0, 0]
        );
        assert!(schedule_executors_on_workers(app(10, None, 1024), &[], true).is_empty());
    }

    #[test]
    fn executor_limit() {
        let w = workers(3, W, M);
        let mut a = app(u32::MAX, Some(2), 256);
        a.executor_limit = 2;
        assert_eq!(schedule_executors_on_workers(a, &w, true), vec![2, 2, 0]);
    }
}
