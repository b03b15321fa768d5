//! The listener bus (Spark's LiveListenerBus): scheduler events delivered, in
//! order, on one thread to registered listeners, so a slow listener never stalls
//! scheduling. The console progress bar is one such listener.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, unbounded};
use parking_lot::Mutex;

#[derive(Clone, Debug)]
pub enum Event {
    JobStart {
        job_id: usize,
        /// None for a job with no partitions: it runs no stage.
        final_stage: Option<usize>,
    },
    JobEnd {
        job_id: usize,
        succeeded: bool,
    },
    StageSubmitted {
        stage_id: usize,
        attempt: usize,
        num_tasks: usize,
        name: String,
        pool: String,
    },
    StageCompleted {
        stage_id: usize,
        attempt: usize,
        failure: Option<String>,
    },
    TaskStart {
        stage_id: usize,
        attempt: usize,
        task_id: u64,
        partition: usize,
    },
    TaskEnd {
        stage_id: usize,
        attempt: usize,
        task_id: u64,
        partition: usize,
        succeeded: bool,
        /// The executor that ran it ("driver" in local mode).
        executor: String,
        metrics: crate::metrics::TaskMetrics,
    },
    /// Metrics of tasks still running, from an executor's heartbeat (Spark's
    /// SparkListenerExecutorMetricsUpdate).
    ExecutorMetricsUpdate {
        executor: String,
        tasks: Vec<(u64, crate::metrics::TaskMetrics)>,
    },
}

pub trait Listener: Send {
    fn on_event(&mut self, event: &Event);
    /// Called about every 200 ms while the bus runs (for periodic output).
    fn on_tick(&mut self) {}
}

enum Msg {
    Event(Event),
    Add(Box<dyn Listener>),
    Stop,
}

/// Posting side of the bus; cheap to clone.
#[derive(Clone)]
pub struct ListenerBus {
    tx: Sender<Msg>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    /// Whether any listener was added. Until then events are dropped where
    /// they are posted: each would wake the bus's thread (two per task) only
    /// for it to find no one to tell.
    listening: Arc<AtomicBool>,
}

impl ListenerBus {
    pub fn start() -> Self {
        let (tx, rx) = unbounded();
        let h = std::thread::Builder::new()
            .name("flint-listener-bus".into())
            .spawn(move || run(rx))
            .ok();
        ListenerBus {
            tx,
            thread: Arc::new(Mutex::new(h)),
            listening: Arc::default(),
        }
    }

    /// Posts the event `e` builds; built only when someone listens.
    pub fn post(&self, e: impl FnOnce() -> Event) {
        if self.listening.load(Ordering::Acquire) {
            let _ = self.tx.send(Msg::Event(e()));
        }
    }

    /// The listener sees every event posted after this returns (as in Spark,
    /// none from before).
    pub fn add_listener(&self, l: Box<dyn Listener>) {
        // Queued before the flag is set: an event posted once the flag is
        // seen is queued behind the listener.
        let _ = self.tx.send(Msg::Add(l));
        self.listening.store(true, Ordering::Release);
    }

    /// Delivers what is queued, then stops the thread.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(h) = self.thread.lock().take() {
            let _ = h.join();
        }
    }
}

fn run(rx: Receiver<Msg>) {
    let mut listeners: Vec<Box<dyn Listener>> = Vec::new();
    let tick = Duration::from_millis(200);
    let mut last_tick = Instant::now();
    loop {
        match rx.recv_timeout(tick) {
            Ok(Msg::Event(e)) => {
                for l in &mut listeners {
                    l.on_event(&e);
                }
            }
            Ok(Msg::Add(l)) => listeners.push(l),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if last_tick.elapsed() >= tick {
            last_tick = Instant::now();
            for l in &mut listeners {
                l.on_tick();
            }
        }
    }
    for l in &mut listeners {
        l.on_tick();
    }
}

struct StageProgress {
    total: usize,
    done: usize,
    running: usize,
    started: Instant,
}

/// Spark's console progress bar: `[Stage 3:=====>   (12 + 2) / 40]` per active
/// stage on stderr, redrawn every 200 ms, shown only for stages running longer
/// than 500 ms, erased when they finish.
pub struct ConsoleProgressBar {
    stages: BTreeMap<usize, StageProgress>,
    width: usize,
    shown: bool,
    out: Box<dyn Write + Send>,
}

impl ConsoleProgressBar {
    pub fn new(out: Box<dyn Write + Send>, width: usize) -> Self {
        ConsoleProgressBar {
            stages: BTreeMap::new(),
            width,
            shown: false,
            out,
        }
    }

    /// A bar on stderr when it is a terminal and `enabled`.
    pub fn for_stderr(enabled: bool) -> Option<Self> {
        (enabled && std::io::stderr().is_terminal()).then(|| {
            let width = std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(80);
            ConsoleProgressBar::new(Box::new(std::io::stderr()), width)
        })
    }

    /// The bar text for the current stages (empty when nothing is worth showing).
    pub fn render(&self, min_age: Duration) -> String {
        let shown: Vec<(&usize, &StageProgress)> = self
            .stages
            .iter()
            .filter(|(_, s)| s.started.elapsed() >= min_age)
            .take(3)
            .collect();
        if shown.is_empty() {
            return String::new();
        }
        let each = self.width / shown.len();
        let mut line = String::new();
        for (id, s) in shown {
            let header = format!("[Stage {id}:");
            let tailer = format!("({} + {}) / {}]", s.done, s.running, s.total);
            let w = each.saturating_sub(header.len() + tailer.len());
            let bar = if w > 0 {
                let percent = w * s.done / s.total.max(1);
                let mut b = String::with_capacity(w);
                for i in 0..w {
                    b.push(if i < percent {
                        '='
                    } else if i == percent {
                        '>'
                    } else {
                        ' '
                    });
                }
                b
            } else {
                String::new()
            };
            line.push_str(&header);
            line.push_str(&bar);
            line.push_str(&tailer);
        }
        line
    }

    fn draw(&mut self) {
        let line = self.render(Duration::from_millis(500));
        if line.is_empty() {
            self.clear();
            return;
        }
        let _ = write!(self.out, "\r{line}");
        let _ = self.out.flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let _ = write!(self.out, "\r{}\r", " ".repeat(self.width));
            let _ = self.out.flush();
            self.shown = false;
        }
    }
}

impl Listener for ConsoleProgressBar {
    fn on_event(&mut self, e: &Event) {
        match e {
            Event::StageSubmitted {
                stage_id,
                num_tasks,
                ..
            } => {
                self.stages.insert(
                    *stage_id,
                    StageProgress {
                        total: *num_tasks,
                        done: 0,
                        running: 0,
                        started: Instant::now(),
                    },
                );
            }
            Event::TaskStart { stage_id, .. } => {
                if let Some(s) = self.stages.get_mut(stage_id) {
                    s.running += 1;
                }
            }
            Event::TaskEnd {
                stage_id,
                succeeded,
                ..
            } => {
                if let Some(s) = self.stages.get_mut(stage_id) {
                    s.running = s.running.saturating_sub(1);
                    if *succeeded {
                        s.done += 1;
                    }
                }
            }
            Event::StageCompleted { stage_id, .. } => {
                self.stages.remove(stage_id);
                if self.stages.is_empty() {
                    self.clear();
                }
            }
            _ => {}
        }
    }

    fn on_tick(&mut self) {
        self.draw();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_like_spark() {
        let mut bar = ConsoleProgressBar::new(Box::new(std::io::sink()), 60);
        bar.on_event(&Event::StageSubmitted {
            stage_id: 3,
            attempt: 0,
            num_tasks: 40,
            name: "x".into(),
            pool: "default".into(),
        });
        for t in 0..14 {
            bar.on_event(&Event::TaskStart {
                stage_id: 3,
                attempt: 0,
                task_id: t,
                partition: t as usize,
            });
        }
        for t in 0..12 {
            bar.on_event(&Event::TaskEnd {
                stage_id: 3,
                attempt: 0,
                task_id: t,
                partition: t as usize,
                succeeded: true,
                executor: "driver".into(),
                metrics: Default::default(),
            });
        }
        let line = bar.render(Duration::ZERO);
        assert!(
            line.starts_with("[Stage 3:") && line.ends_with("(12 + 2) / 40]"),
            "{line}"
        );
        assert_eq!(line.len(), 60);
        assert!(line.contains("=====>"), "{line}");
        // Young stages are not shown (Spark waits 500 ms).
        assert!(bar.render(Duration::from_secs(3600)).is_empty());
        bar.on_event(&Event::StageCompleted {
            stage_id: 3,
            attempt: 0,
            failure: None,
        });
        assert!(bar.render(Duration::ZERO).is_empty());
    }

    struct Seen(Arc<Mutex<Vec<usize>>>);

    impl Listener for Seen {
        fn on_event(&mut self, e: &Event) {
            if let Event::JobStart { job_id, .. } = e {
                self.0.lock().push(*job_id);
            }
        }
    }

    fn job(job_id: usize) -> Event {
        Event::JobStart {
            job_id,
            final_stage: None,
        }
    }

    #[test]
    fn listeners_see_every_event_posted_after_they_were_added_in_order() {
        let bus = ListenerBus::start();
        // No listener yet: these go nowhere.
        for j in 0..5 {
            bus.post(|| job(j));
        }
        let first = Arc::new(Mutex::new(Vec::new()));
        bus.add_listener(Box::new(Seen(first.clone())));
        for j in 5..1000 {
            bus.post(|| job(j));
        }
        let second = Arc::new(Mutex::new(Vec::new()));
        bus.add_listener(Box::new(Seen(second.clone())));
        for j in 1000..1010 {
            bus.post(|| job(j));
        }
        bus.stop();
        assert_eq!(*first.lock(), (5..1010).collect::<Vec<_>>());
        assert_eq!(*second.lock(), (1000..1010).collect::<Vec<_>>());
    }
}
