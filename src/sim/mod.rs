//! The deterministic scheduler of the shard simulations (tests/simulation.rs,
//! tests/txn_simulation.rs): a single-threaded executor that polls a seeded
//! random choice among the ready tasks and advances the simulated clock only
//! when none is ready, so that a seed fixes the whole interleaving and a trace
//! hash of the choices shows that it did.
//!
//! It lives in the library so that every simulation (and a fuzz target) shares
//! one scheduler. It must never: read the real clock, spawn threads, or let a
//! task run that the seed did not choose.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::shard::clock::SimClock;

type Task = Pin<Box<dyn Future<Output = ()>>>;

struct TaskWaker {
    id: usize,
    ready: Arc<Mutex<BTreeSet<usize>>>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(self.id);
    }
}

/// A seeded single-threaded executor over a simulated clock.
pub struct Sched {
    tasks: Vec<Option<Task>>,
    ready: Arc<Mutex<BTreeSet<usize>>>,
    rng: StdRng,
    clock: SimClock,
    /// FNV-style hash of every choice made: same seed, same trace.
    pub trace: u64,
    /// Tasks polled so far.
    pub steps: u64,
}

impl Sched {
    pub fn new(seed: u64, clock: SimClock) -> Sched {
        Sched {
            tasks: Vec::new(),
            ready: Arc::new(Mutex::new(BTreeSet::new())),
            rng: StdRng::seed_from_u64(seed),
            clock,
            trace: 0xcbf2_9ce4_8422_2325,
            steps: 0,
        }
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, BTreeSet<usize>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add a task, ready to run; returns its id.
    pub fn spawn(&mut self, f: impl Future<Output = ()> + 'static) -> usize {
        self.tasks.push(Some(Box::pin(f)));
        let id = self.tasks.len() - 1;
        self.ready().insert(id);
        id
    }

    /// Whether task `id` has finished.
    pub fn done(&self, id: usize) -> bool {
        self.tasks[id].is_none()
    }

    /// Poll one ready task chosen by the seed (or, with none ready, fire the
    /// next timer); false when nothing can ever run again.
    pub fn step(&mut self) -> bool {
        let ready: Vec<usize> = self.ready().iter().copied().collect();
        if ready.is_empty() {
            return self.clock.advance();
        }
        let id = ready[self.rng.gen_range(0..ready.len())];
        self.ready().remove(&id);
        self.mix(id as u64);
        self.steps += 1;
        let Some(task) = self.tasks[id].as_mut() else {
            return true;
        };
        let waker = Waker::from(Arc::new(TaskWaker {
            id,
            ready: self.ready.clone(),
        }));
        if task
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            self.tasks[id] = None;
        }
        true
    }

    /// Run until task `id` is done, or `limit` steps, or nothing can run.
    /// Returns whether it finished.
    pub fn run_until_done(&mut self, id: usize, limit: u64) -> bool {
        let start = self.steps;
        while !self.done(id) {
            if self.steps - start >= limit || !self.step() {
                return false;
            }
        }
        true
    }

    pub fn mix(&mut self, v: u64) {
        self.trace = (self.trace ^ v).wrapping_mul(0x0100_0000_01b3);
    }
}

/// The seeds a simulation test runs: `COREKV_SIM_SEED=n` replays one;
/// otherwise `1..=count`, the count from the environment variable `count_var`
/// or `default`.
pub fn seeds(count_var: &str, default: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("COREKV_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let n: u64 = std::env::var(count_var)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    (1..=n).collect()
}

/// Run `run` for every seed on two threads (simulation mode on each), adding
/// up each seed's statistics with `add`. Returns every failure's message and
/// the total.
pub fn run_seeds<S: Default + Send>(
    seeds: &[u64],
    run: impl Fn(u64) -> Result<S, String> + Sync,
    add: impl Fn(&mut S, &S) + Sync,
) -> (Vec<String>, S) {
    const THREADS: usize = 2;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let mine: Vec<u64> = seeds.iter().copied().skip(t).step_by(THREADS).collect();
                let (run, add) = (&run, &add);
                scope.spawn(move || {
                    crate::shard::wake::set_simulated(true);
                    let mut failed = Vec::new();
                    let mut total = S::default();
                    for seed in mine {
                        match run(seed) {
                            Ok(s) => add(&mut total, &s),
                            Err(e) => failed.push(e),
                        }
                    }
                    (failed, total)
                })
            })
            .collect();
        let mut failed = Vec::new();
        let mut total = S::default();
        for h in handles {
            match h.join() {
                Ok((f, s)) => {
                    failed.extend(f);
                    add(&mut total, &s);
                }
                Err(_) => failed.push("a simulation thread panicked".into()),
            }
        }
        (failed, total)
    })
}

/// The assertion message for failed seeds (the first ten).
pub fn failure_report(failures: &[String], seeds: usize) -> String {
    format!(
        "{} of {seeds} seeds failed (replay one with COREKV_SIM_SEED=<seed>):\n{}",
        failures.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    )
}
