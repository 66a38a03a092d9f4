//! The scheduler: jobs from registrations run on their cron schedules (the seconds field is
//! optional), calling the job's handler with no arguments within the job's timeout (default
//! 300 s). A job never overlaps itself; a disabled plugin's jobs do not run and an unloaded
//! plugin's stop; runs and failures are counted and logged.
//!
//! On a cluster, [`Scheduler::set_claims`] makes each occurrence run on one node only: every
//! node claims it first ([`crate::cluster::jobs`] says how, and what happens when claims fail).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use gk_sdk::JobSpec;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::cluster::jobs::{JobClaimError, JobClaims};
use crate::schedule::parse_schedule;
use crate::{Manager, ManagerError};

/// How long a job may run when its registration gives no timeout.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Counters of one job.
#[derive(Debug, Default)]
struct JobCounters {
    runs: AtomicU64,
    failures: AtomicU64,
    skipped: AtomicU64,
    claimed_elsewhere: AtomicU64,
    claim_errors: AtomicU64,
    running: AtomicBool,
}

/// A job's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct JobStats {
    /// Completed runs (successful or not).
    pub runs: u64,
    /// Runs that failed or timed out.
    pub failures: u64,
    /// Occurrences skipped because the previous run was still going.
    pub skipped: u64,
    /// Occurrences another node claimed and ran (with claims set).
    pub claimed_elsewhere: u64,
    /// Occurrences skipped because no claim could be made (with claims set).
    pub claim_errors: u64,
}

struct ScheduledJob {
    task: JoinHandle<()>,
    counters: Arc<JobCounters>,
}

/// How long a claim may take before the occurrence is skipped.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the occurrences are claimed (none: every node runs them), shared with the jobs' tasks
/// so that a change applies from the next occurrence.
#[derive(Clone, Default)]
struct ClaimSlot {
    claims: Arc<RwLock<Option<Arc<dyn JobClaims>>>>,
    /// Whether the last claim failed (to log an outage once).
    failing: Arc<AtomicBool>,
}

/// Runs the jobs of the manager's plugins.
pub struct Scheduler {
    manager: Manager,
    jobs: Mutex<HashMap<(String, String), ScheduledJob>>,
    claims: ClaimSlot,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let jobs = self.jobs.lock().map(|j| j.len()).unwrap_or(0);
        f.debug_struct("Scheduler")
            .field("jobs", &jobs)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler for `manager`'s plugins.
    pub fn new(manager: Manager) -> Self {
        Self {
            manager,
            jobs: Mutex::new(HashMap::new()),
            claims: ClaimSlot::default(),
        }
    }

    /// Makes each occurrence of every job run on one node of the cluster: before running one,
    /// this node claims it in `claims`, and runs it only if it won. Applies from the next
    /// occurrence of jobs already scheduled. Without claims every node runs every occurrence.
    pub fn set_claims(&self, claims: Arc<dyn JobClaims>) {
        *self
            .claims
            .claims
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(claims);
    }

    /// (Re)schedules the enabled jobs of `plugin`'s registration; returns how many run.
    pub fn schedule_plugin(&self, plugin: &str) -> Result<usize, ManagerError> {
        self.unschedule_plugin(plugin);
        let registration = self.manager.registration(plugin)?;
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut count = 0;
        for job in registration.jobs.iter().filter(|job| job.enabled) {
            let cron = parse_schedule(&job.schedule).map_err(|e| ManagerError::Invalid {
                plugin: plugin.to_owned(),
                problem: e.to_string(),
            })?;
            let counters = Arc::new(JobCounters::default());
            let task = tokio::spawn(run_job(JobTask {
                manager: self.manager.clone(),
                plugin: plugin.to_owned(),
                id: job.id.clone(),
                handler: job.handler.clone(),
                cron,
                timeout: job.timeout.unwrap_or(DEFAULT_JOB_TIMEOUT),
                counters: counters.clone(),
                claims: self.claims.clone(),
            }));
            jobs.insert(
                (plugin.to_owned(), job.id.clone()),
                ScheduledJob { task, counters },
            );
            count += 1;
        }
        Ok(count)
    }

    /// Stops every job of `plugin`.
    pub fn unschedule_plugin(&self, plugin: &str) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.retain(|(owner, _), job| {
            let keep = owner != plugin;
            if !keep {
                job.task.abort();
            }
            keep
        });
    }

    /// A job's counters.
    pub fn job_stats(&self, plugin: &str, job: &str) -> Option<JobStats> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(&(plugin.to_owned(), job.to_owned()))
            .map(|job| JobStats {
                runs: job.counters.runs.load(Ordering::Relaxed),
                failures: job.counters.failures.load(Ordering::Relaxed),
                skipped: job.counters.skipped.load(Ordering::Relaxed),
                claimed_elsewhere: job.counters.claimed_elsewhere.load(Ordering::Relaxed),
                claim_errors: job.counters.claim_errors.load(Ordering::Relaxed),
            })
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if let Ok(jobs) = self.jobs.lock() {
            for job in jobs.values() {
                job.task.abort();
            }
        }
    }
}

/// One scheduled job.
struct JobTask {
    manager: Manager,
    plugin: String,
    id: String,
    handler: String,
    cron: Cron,
    timeout: Duration,
    counters: Arc<JobCounters>,
    claims: ClaimSlot,
}

impl ClaimSlot {
    /// Whether this node runs occurrence `tick` of `plugin`'s job `job`: yes without claims;
    /// with claims, when this node's claim won. A claim that fails skips the occurrence.
    async fn wins(
        &self,
        plugin: &str,
        job: &str,
        tick: DateTime<Utc>,
        counters: &JobCounters,
    ) -> bool {
        let claims = self
            .claims
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(claims) = claims else {
            return true;
        };
        let outcome = tokio::time::timeout(CLAIM_TIMEOUT, claims.claim(plugin, job, tick))
            .await
            .unwrap_or_else(|_| {
                Err(JobClaimError::Timeout {
                    after: CLAIM_TIMEOUT,
                })
            });
        match outcome {
            Ok(won) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(node = claims.node(), "job claims work again");
                }
                if !won {
                    counters.claimed_elsewhere.fetch_add(1, Ordering::Relaxed);
                }
                won
            }
            Err(error) => {
                counters.claim_errors.fetch_add(1, Ordering::Relaxed);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(node = claims.node(), plugin, job, %error, "job occurrences cannot be claimed: this node skips them until claims work again");
                }
                false
            }
        }
    }
}

async fn run_job(task: JobTask) {
    let JobTask {
        manager,
        plugin,
        id,
        handler,
        cron,
        timeout,
        counters,
        claims,
    } = task;
    loop {
        let now = Utc::now();
        let Ok(next) = cron.find_next_occurrence(&now, false) else {
            tracing::warn!(plugin, job = %id, "the schedule has no next occurrence; the job stops");
            return;
        };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(wait).await;
        match manager.is_enabled(&plugin) {
            Err(_) => return,
            Ok(false) => continue,
            Ok(true) => {}
        }
        if counters.running.swap(true, Ordering::SeqCst) {
            counters.skipped.fetch_add(1, Ordering::Relaxed);
            tracing::info!(plugin, job = %id, "the previous run is still going; this occurrence is skipped");
            continue;
        }
        if !claims.wins(&plugin, &id, next, &counters).await {
            counters.running.store(false, Ordering::SeqCst);
            continue;
        }
        let (manager, plugin, id, handler, counters) = (
            manager.clone(),
            plugin.clone(),
            id.clone(),
            handler.clone(),
            counters.clone(),
        );
        tokio::spawn(async move {
            let outcome = tokio::time::timeout(timeout, manager.call(&plugin, &handler, b"")).await;
            counters.runs.fetch_add(1, Ordering::Relaxed);
            match outcome {
                Ok(Ok(_)) => tracing::info!(plugin, job = %id, "job ran"),
                Ok(Err(error)) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(plugin, job = %id, %error, "job failed");
                }
                Err(_) => {
                    counters.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(plugin, job = %id, timeout_ms = timeout.as_millis() as u64, "job timed out");
                }
            }
            counters.running.store(false, Ordering::SeqCst);
        });
    }
}

/// How often [`Scheduler::follow_manager`] looks at the manager's catalog for changes.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(500);

/// The jobs that should run for `plugin` now: none unless it is loaded and enabled.
fn wanted_jobs(manager: &Manager, plugin: &str) -> Vec<JobSpec> {
    if !manager.is_enabled(plugin).unwrap_or(false) || !manager.is_loaded(plugin).unwrap_or(false) {
        return Vec::new();
    }
    manager
        .registration(plugin)
        .map(|r| r.jobs.into_iter().filter(|j| j.enabled).collect())
        .unwrap_or_default()
}

impl Scheduler {
    /// Keeps the jobs in step with the manager's plugins: the jobs of every loaded, enabled
    /// plugin run; a plugin disabled, unloaded or removed has its jobs stopped; a reload with
    /// other jobs is rescheduled. Plugins load lazily, so a plugin's jobs run once it is loaded
    /// (its first use, or at start with eager loading). Runs until the handle is aborted.
    pub fn follow_manager(self: &Arc<Self>) -> JoinHandle<()> {
        let scheduler = Arc::clone(self);
        tokio::spawn(async move {
            let mut seen_version = None;
            let mut scheduled = HashMap::new();
            loop {
                let version = scheduler.manager.catalog_version();
                if seen_version != Some(version) {
                    seen_version = Some(version);
                    scheduler.sync(&mut scheduled);
                }
                tokio::time::sleep(FOLLOW_INTERVAL).await;
            }
        })
    }

    /// One step of [`Self::follow_manager`]: `scheduled` is what runs, by plugin.
    fn sync(&self, scheduled: &mut HashMap<String, Vec<JobSpec>>) {
        let names = self.manager.names();
        scheduled.retain(|plugin, _| {
            let known = names.contains(plugin);
            if !known {
                self.unschedule_plugin(plugin);
            }
            known
        });
        for plugin in names {
            let wanted = wanted_jobs(&self.manager, &plugin);
            let running = scheduled.get(&plugin).map_or(&[][..], Vec::as_slice);
            if running == wanted.as_slice() {
                continue;
            }
            if wanted.is_empty() {
                self.unschedule_plugin(&plugin);
                tracing::info!(%plugin, "jobs stopped");
            } else {
                match self.schedule_plugin(&plugin) {
                    Ok(count) => tracing::info!(%plugin, count, "jobs scheduled"),
                    Err(error) => tracing::warn!(%plugin, %error, "jobs not scheduled"),
                }
            }
            scheduled.insert(plugin, wanted);
        }
    }
}
