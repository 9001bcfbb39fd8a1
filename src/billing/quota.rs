//! The plan's monthly verification quota, decided in memory: each project's
//! count for the current UTC month is loaded once (from the stored usage)
//! and then counted here; the counts themselves are persisted with usage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::config::Config;
use crate::keys::credits::Interval;
use crate::keys::usage::Usage;
use crate::store::{ProjectId, Store, StoreError};

struct ProjectQuota {
    month_start: i64,
    used: u64,
    limit: Option<u64>,
}

pub struct Quotas {
    config: Arc<Config>,
    projects: Mutex<HashMap<String, ProjectQuota>>,
}

impl Quotas {
    pub fn new(config: Arc<Config>) -> Self {
        Quotas {
            config,
            projects: Mutex::new(HashMap::new()),
        }
    }

    /// Loads the project's plan and this month's count when not known yet.
    pub async fn ensure_loaded(
        &self,
        store: &dyn Store,
        usage: &Usage,
        project_id: &str,
    ) -> Result<(), StoreError> {
        if self
            .projects
            .lock()
            .expect("quota lock")
            .contains_key(project_id)
        {
            return Ok(());
        }
        let now = crate::types::now();
        let month_start = Interval::Monthly.period_start(now);
        let plan = store
            .project(ProjectId::from(project_id))
            .await?
            .map(|p| p.plan)
            .unwrap_or_else(|| self.config.billing.default_plan.clone());
        let (_, limit) = super::limits(&self.config, &plan);
        // Counts still in memory belong to this month too.
        usage.flush(store).await?;
        let used = store
            .project_verifications_since(ProjectId::from(project_id), month_start)
            .await?;
        self.projects
            .lock()
            .expect("quota lock")
            .entry(project_id.to_string())
            .or_insert(ProjectQuota {
                month_start,
                used,
                limit,
            });
        Ok(())
    }

    /// Spends one verification of the project's quota if any is left.
    pub fn try_spend(&self, project_id: &str, now: i64) -> bool {
        let mut map = self.projects.lock().expect("quota lock");
        let Some(q) = map.get_mut(project_id) else {
            return true;
        };
        let month_start = Interval::Monthly.period_start(now);
        if month_start != q.month_start {
            q.month_start = month_start;
            q.used = 0;
        }
        if q.limit.is_some_and(|limit| q.used >= limit) {
            return false;
        }
        q.used += 1;
        true
    }

    /// Forgets a project (its plan changed); the next check reloads it.
    pub fn invalidate(&self, project_id: &str) {
        self.projects.lock().expect("quota lock").remove(project_id);
    }
}
