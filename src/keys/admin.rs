//! Issuing, editing, rotating and revoking keys: [`KeyService`], the one
//! path for the HTTP routes, leaked-key reports and the CLI. Each change is
//! stored with its audit row, webhook event and change-feed entry in one
//! transaction, and reaches this process's verification cache (when there
//! is one) before the caller gets its answer; other processes learn of it
//! through the change feed.

use std::sync::Arc;

use crate::catalog::Catalog;
use crate::config::Config;
use crate::crypto::new_id;
use crate::error::{ApiError, ErrorCode};
use crate::keys::credits::Balance;
use crate::keys::events::{KeyEvents, RotationRefusal};
use crate::keys::input::{self, KeySpec, PatchKeyBody};
use crate::keys::record::KeyRecord;
use crate::keys::store::KeyStore;
use crate::keys::ApiKey;
use crate::store::audit::{Actor, ActorType};
use crate::store::directory::Project;
use crate::store::keys::KeyRepo;
use crate::store::keys::Rotated;
use crate::store::{KeyHash, KeyId, ProjectId};

/// A fresh key and its stored record. The plaintext lives only in the
/// returned [`ApiKey`].
pub fn mint(
    spec: KeySpec,
    project_id: &str,
    created_by: Option<String>,
    prefix: &str,
    now: i64,
) -> (KeyRecord, ApiKey) {
    let key = ApiKey::generate(prefix, spec.kind);
    let record = KeyRecord {
        id: Arc::from(new_id("key")),
        project_id: Arc::from(project_id),
        hash: key.hash(),
        prefix: key.display_prefix().to_string(),
        name: spec.name,
        kind: spec.kind,
        environment: spec.environment,
        scopes: spec.scopes,
        rate_limit: spec.rate_limit,
        owner_id: spec.owner_id,
        credits: spec.credits.map(|(remaining, refill)| Balance {
            remaining,
            refill,
            period_start: refill.map(|r| r.interval.period_start(now)).unwrap_or(0),
        }),
        allowed_ips: spec.allowed_ips,
        metadata: spec.metadata,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        expires_at: spec.expires_at,
        revoked_at: None,
        created_by,
        rotated_to: None,
    };
    (record, key)
}

fn no_such_key() -> ApiError {
    ApiError::not_found().with_message("No such key.")
}

/// Key changes, for every caller.
pub struct KeyService<'a> {
    store: &'a dyn KeyRepo,
    config: &'a Config,
    /// The running server's verification cache; the CLI has none (a running
    /// server learns of its changes through the change feed).
    cache: Option<&'a KeyStore>,
}

impl<'a> KeyService<'a> {
    pub fn new(store: &'a dyn KeyRepo, config: &'a Config, cache: Option<&'a KeyStore>) -> Self {
        KeyService {
            store,
            config,
            cache,
        }
    }

    fn events(&self) -> KeyEvents {
        KeyEvents {
            default_rate: self.config.keys.default_rate_limit,
            now: self.store.clock().now(),
        }
    }

    fn cached(&self, record: &KeyRecord) {
        if let Some(cache) = self.cache {
            cache.updated(record);
        }
    }

    fn max_keys(&self, plan: &str) -> Option<u64> {
        crate::billing::limits(self.config, plan).0
    }

    /// Issues a key, within the plan's `max_keys` (403 `plan_limit`).
    pub async fn create(
        &self,
        project: &Project,
        spec: KeySpec,
        actor: Actor,
    ) -> Result<(KeyRecord, ApiKey), ApiError> {
        let created_by = actor.id.clone().filter(|_| actor.kind == ActorType::User);
        let now = self.store.clock().now();
        let (record, key) = mint(spec, &project.id, created_by, &self.config.keys.prefix, now);
        let max_keys = self.max_keys(&project.plan);
        let effects = self.events().created(&record, &actor);
        let record = self
            .store
            .create_key(record, max_keys, effects)
            .await?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::PlanLimit).with_message(format!(
                    "The {} plan allows {} active keys; revoke one or upgrade.",
                    project.plan,
                    max_keys.unwrap_or_default()
                ))
            })?;
        Ok((record, key))
    }

    /// Revokes a key (idempotent).
    pub async fn revoke(
        &self,
        project_id: &str,
        id: &str,
        actor: Actor,
    ) -> Result<KeyRecord, ApiError> {
        let now = self.store.clock().now();
        let events = self.events();
        let record = self
            .store
            .update_key(
                ProjectId::from(project_id),
                KeyId::from(id),
                Box::new(move |k| {
                    let already = k.revoked_at.is_some();
                    k.revoked_at = Some(k.revoked_at.unwrap_or(now));
                    events.changed(
                        k,
                        "key.revoked",
                        &actor,
                        serde_json::json!({ "already_revoked": already }),
                    )
                }),
            )
            .await?
            .ok_or_else(no_such_key)?;
        self.cached(&record);
        Ok(record)
    }

    /// Revokes an active key found by hash (a leak report): `None` when
    /// unknown, else the key and whether this report revoked it.
    pub async fn revoke_leaked(
        &self,
        hash: [u8; 32],
        actor: Actor,
        report: serde_json::Value,
    ) -> Result<Option<(KeyRecord, bool)>, ApiError> {
        let events = self.events();
        let outcome = self
            .store
            .revoke_leaked(
                KeyHash(hash),
                Box::new(move |k| events.leaked(k, &actor, report)),
            )
            .await?;
        if let Some((key, true)) = &outcome {
            self.cached(key);
        }
        Ok(outcome)
    }

    /// A new key with the same settings; the old one is revoked now
    /// (`grace_secs` = 0) or expires after the grace. The new key takes over
    /// the old key's credit balance and window (the two share them during
    /// the grace), and an expiring key's lifetime is carried over.
    pub async fn rotate(
        &self,
        project: &Project,
        id: &str,
        grace_secs: i64,
        actor: Actor,
    ) -> Result<(KeyRecord, ApiKey), ApiError> {
        let now = self.store.clock().now();
        let old = self
            .store
            .key(ProjectId::from(project.id.as_str()), KeyId::from(id))
            .await?
            .ok_or_else(no_such_key)?;
        let spec = KeySpec {
            name: old.name.clone(),
            kind: old.kind,
            environment: old.environment.clone(),
            scopes: old.scopes.clone(),
            expires_at: old.expires_at.map(|e| now + (e - old.created_at).max(1)),
            rate_limit: old.rate_limit,
            owner_id: old.owner_id.clone(),
            credits: None,
            allowed_ips: old.allowed_ips.clone(),
            metadata: old.metadata.clone(),
        };
        let created_by = actor.id.clone().filter(|_| actor.kind == ActorType::User);
        let (new, key) = mint(spec, &project.id, created_by, &self.config.keys.prefix, now);
        let old_expires = (grace_secs > 0).then(|| self.store.clock().expires_after(grace_secs));
        let max_keys = self.max_keys(&project.plan);
        let events = self.events();
        let rotated = self
            .store
            .rotate_key(
                ProjectId::from(project.id.as_str()),
                KeyId::from(id),
                new,
                old_expires,
                max_keys,
                Box::new(move |old, new, ended| events.rotated(old, new, ended, &actor)),
            )
            .await?;
        match rotated {
            Rotated::Done {
                old,
                new,
                ended_grace,
            } => {
                if let Some(predecessor) = ended_grace {
                    self.cached(&predecessor);
                }
                self.cached(&old);
                Ok((*new, key))
            }
            Rotated::NotFound => Err(no_such_key()),
            Rotated::Refused(RotationRefusal::Inactive) => Err(ApiError::new(ErrorCode::Conflict)
                .with_message("Only an active key can be rotated.")),
            Rotated::Refused(RotationRefusal::AlreadyRotated(successor)) => {
                Err(ApiError::new(ErrorCode::Conflict).with_message(format!(
                    "This key was already rotated; rotate its successor {successor} instead."
                )))
            }
            Rotated::Refused(RotationRefusal::PlanLimit) => Err(ApiError::new(ErrorCode::PlanLimit)
                .with_message(format!(
                    "The {} plan allows {} active keys, and the previous key stays active during the grace period; rotate with expire_previous_in_secs = 0 or revoke a key first.",
                    project.plan,
                    max_keys.unwrap_or_default()
                ))),
        }
    }

    /// Applies a PATCH. Absent fields stay; `null` clears a nullable field.
    pub async fn patch(
        &self,
        catalog: &Catalog,
        project_id: &str,
        id: &str,
        body: PatchKeyBody,
        actor: Actor,
    ) -> Result<KeyRecord, ApiError> {
        let now = self.store.clock().now();
        let name = body.name.as_deref().map(input::name).transpose()?;
        let scopes = body
            .scopes
            .as_deref()
            .map(|s| input::scopes(s, catalog))
            .transpose()?;
        let rate_limit = body
            .rate_limit
            .map(|r| r.map(input::rate_limit).transpose())
            .transpose()?;
        let owner_id = body
            .owner_id
            .map(|o| o.as_deref().map(input::owner_id).transpose())
            .transpose()?;
        let credits = body
            .credits
            .map(|c| c.map(input::credits).transpose())
            .transpose()?;
        let allowed_ips = body
            .allowed_ips
            .map(|a| a.as_deref().map(input::allowed_ips).transpose())
            .transpose()?;
        let expires_at = body
            .expires_at
            .map(|e| e.as_deref().map(|s| input::expires_at(s, now)).transpose())
            .transpose()?;
        let metadata = body
            .metadata
            .map(|m| input::metadata(Some(m)))
            .transpose()?;

        let events = self.events();
        let record = self
            .store
            .update_key(
                ProjectId::from(project_id),
                KeyId::from(id),
                Box::new(move |k| {
                    let mut changed = Vec::new();
                    if let Some(v) = name {
                        k.name = v;
                        changed.push("name");
                    }
                    if let Some(v) = scopes {
                        k.scopes = v;
                        changed.push("scopes");
                    }
                    if let Some(v) = rate_limit {
                        k.rate_limit = v;
                        changed.push("rate_limit");
                    }
                    if let Some(v) = owner_id {
                        k.owner_id = v;
                        changed.push("owner_id");
                    }
                    if let Some(v) = credits {
                        k.credits = v.map(|(remaining, refill)| Balance {
                            remaining,
                            refill,
                            period_start: refill.map(|r| r.interval.period_start(now)).unwrap_or(0),
                        });
                        changed.push("credits");
                    }
                    if let Some(v) = allowed_ips {
                        k.allowed_ips = v;
                        changed.push("allowed_ips");
                    }
                    if let Some(v) = expires_at {
                        k.expires_at = v;
                        changed.push("expires_at");
                    }
                    if let Some(v) = metadata {
                        k.metadata = v;
                        changed.push("metadata");
                    }
                    events.changed(
                        k,
                        "key.updated",
                        &actor,
                        serde_json::json!({ "changed": changed }),
                    )
                }),
            )
            .await?
            .ok_or_else(no_such_key)?;
        if let Some(cache) = self.cache {
            cache.updated(&record);
        }
        Ok(record)
    }
}
