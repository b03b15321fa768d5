//! `local-cluster[N,C,M]`: a master and N workers (C cores, M MiB each) in this
//! process, with executors as real child processes, as Spark's LocalSparkCluster.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::master::{Master, MasterConf, MasterHandle};
use crate::messages::{MasterMsg, MasterStateResponse, WorkerMsg};
use crate::worker::{Worker, WorkerConf, WorkerHandle};

/// Parses `local-cluster[N,C,M]` into (workers, cores per worker, MiB per worker).
pub fn parse_local_cluster(url: &str) -> Result<(usize, u32, u64), String> {
    let inner = url
        .trim()
        .strip_prefix("local-cluster[")
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("'{url}' is not local-cluster[N,C,M]"))?;
    let parts: Vec<&str> = inner.split(',').map(str::trim).collect();
    if parts.len() != 3 {
        return Err(format!(
            "'{url}': expected three numbers: workers, cores per worker, MiB per worker"
        ));
    }
    let bad =
        |what: &str, v: &str| format!("'{url}': {what} '{v}' must be a positive whole number");
    let n: usize = parts[0]
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| bad("worker count", parts[0]))?;
    let c: u32 = parts[1]
        .parse()
        .ok()
        .filter(|&c| c > 0)
        .ok_or_else(|| bad("cores per worker", parts[1]))?;
    let m: u64 = parts[2]
        .parse()
        .ok()
        .filter(|&m| m > 0)
        .ok_or_else(|| bad("memory per worker", parts[2]))?;
    Ok((n, c, m))
}

pub struct LocalCluster {
    pub master: MasterHandle,
    pub workers: Vec<WorkerHandle>,
}

impl LocalCluster {
    /// Starts the daemons on ephemeral loopback ports and waits (bounded) until
    /// every worker is registered.
    pub async fn start(
        workers: usize,
        cores: u32,
        memory_mb: u64,
        work_dir: &Path,
    ) -> Result<Self, String> {
        let master = Master::start(MasterConf {
            port: 0,
            webui_port: 0,
            // Inside the cluster's work dir, so its owner removes one tree.
            binaries_dir: Some(work_dir.join("master-binaries")),
            ..MasterConf::default()
        })
        .await?;
        let mut handles = Vec::new();
        for i in 0..workers {
            let mut conf = WorkerConf::new(vec![master.address.clone()]);
            conf.port = 0;
            conf.webui_port = 0;
            conf.cores = cores;
            conf.memory_mb = memory_mb;
            conf.work_dir = work_dir.join(format!("worker-{i}"));
            conf.registration_base = Duration::from_millis(100);
            handles.push(Worker::start(conf).await?);
        }
        let cluster = LocalCluster {
            master,
            workers: handles,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = cluster.state().await?;
            if st.aliveworkers == workers {
                return Ok(cluster);
            }
            if Instant::now() > deadline {
                cluster.stop().await;
                return Err(format!(
                    "only {} of {workers} local-cluster workers registered",
                    st.aliveworkers
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub fn url(&self) -> &str {
        &self.master.url
    }

    pub async fn state(&self) -> Result<MasterStateResponse, String> {
        self.master
            .master
            .ask(MasterMsg::RequestMasterState, Duration::from_secs(10))
            .await
            .map_err(|e| e.to_string())
    }

    /// Kills every executor and driver, then stops the daemons.
    pub async fn stop(&self) {
        for w in &self.workers {
            let _ = w
                .worker
                .ask::<bool>(WorkerMsg::Shutdown, Duration::from_secs(10))
                .await;
            w.env.shutdown();
        }
        self.master.env.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_cluster_urls() {
        assert_eq!(
            parse_local_cluster("local-cluster[2,1,1024]").unwrap(),
            (2, 1, 1024)
        );
        for bad in [
            "local-cluster[2,1]",
            "local-cluster[0,1,512]",
            "local-cluster[a,1,512]",
            "local[2]",
        ] {
            assert!(parse_local_cluster(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn starts_master_and_workers_in_process() {
        let dir = std::env::temp_dir().join(format!("flint-lc-{}", std::process::id()));
        let c = LocalCluster::start(2, 1, 512, &dir).await.unwrap();
        let st = c.state().await.unwrap();
        assert_eq!(st.aliveworkers, 2);
        assert_eq!(st.cores, 2);
        assert!(c.url().starts_with("flint://127.0.0.1:"));
        c.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
