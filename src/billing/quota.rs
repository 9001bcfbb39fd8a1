//! The plan's monthly verification quota. Each project's limit comes from
//! its plan (read again every [`PLAN_TTL`], and at once on the node that
//! took the plan change); the count itself is spent in storage, one
//! conditional increment per verification
//! ([`crate::store::spend::SpendRepo::spend_quota`]) that also checks the
//! project is still on the plan the limit came from, so the quota holds
//! exactly however many processes verify keys of the project, and a node
//! that has not seen a downgrade yet learns of it from the refused spend.
//! A project whose plan has no monthly limit costs no storage access; one
//! moved onto a limited plan is counted from the next read of its plan
//! (within [`PLAN_TTL`]), starting from its stored usage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::keys::usage::Usage;
use crate::store::{ProjectId, Store, StoreError};

pub struct Quotas {
    config: Arc<Config>,
    /// The monthly limit of each project seen (`None`: unlimited) and when
    /// it was read (milliseconds, the store's clock). Bounded: past
    /// `MAX_PROJECTS` it starts afresh.
    limits: Mutex<HashMap<String, (Option<QuotaLimit>, i64)>>,
}

/// A project's monthly limit and the plan it comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaLimit {
    pub limit: u64,
    pub plan: Arc<str>,
}

const MAX_PROJECTS: usize = 100_000;
/// How long a project's plan is trusted before it is read again. A plan
/// changed through another node (a Stripe event it received) applies here
/// within this time; the counter itself is shared and exact.
pub const PLAN_TTL: Duration = Duration::from_secs(5);

impl Quotas {
    pub fn new(config: Arc<Config>) -> Self {
        Quotas {
            config,
            limits: Mutex::new(HashMap::new()),
        }
    }

    /// The project's monthly verification limit, read from its plan when
    /// not known yet.
    pub async fn limit_for(
        &self,
        store: &dyn Store,
        usage: &Usage,
        project_id: &str,
    ) -> Result<Option<QuotaLimit>, StoreError> {
        let known = self
            .limits
            .lock()
            .expect("quota lock")
            .get(project_id)
            .cloned();
        let now_ms = store.clock().now_ms();
        if let Some((limit, read_at)) = &known {
            // A clock set back makes the age negative: read it again.
            if (0..PLAN_TTL.as_millis() as i64).contains(&(now_ms - read_at)) {
                return Ok(limit.clone());
            }
        }
        let plan = store
            .project(ProjectId::from(project_id))
            .await?
            .map(|p| p.plan)
            .unwrap_or_else(|| self.config.billing.default_plan.clone());
        let (_, limit) = super::limits(&self.config, &plan);
        let limit = limit.map(|limit| QuotaLimit {
            limit,
            plan: Arc::from(plan),
        });
        if limit.is_some() && known.is_none_or(|(before, _)| before.is_none()) {
            // A month's counter starts from the stored usage: counts still
            // in memory belong to it too.
            usage.flush(store).await?;
        }
        let mut limits = self.limits.lock().expect("quota lock");
        if limits.len() >= MAX_PROJECTS {
            limits.clear();
        }
        limits.insert(project_id.to_string(), (limit.clone(), now_ms));
        Ok(limit)
    }

    /// Forgets a project (its plan changed); the next check reloads it.
    pub fn invalidate(&self, project_id: &str) {
        self.limits.lock().expect("quota lock").remove(project_id);
    }
}
