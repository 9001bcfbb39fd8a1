//! The storage conformance suite: the same tests against every backend,
//! through the storage interface only. Each test appears once per backend
//! (`conformance::sqlite::*`, `conformance::postgres::*`), so the output
//! shows how many ran on each.

use std::future::Future;
use std::sync::Arc;

use gatehouse::keys::credits::Balance;
use gatehouse::keys::events::{KeyEvents, RotationRefusal};
use gatehouse::keys::record::KeyRecord;
use gatehouse::keys::{ApiKey, KeyType};
use gatehouse::store::audit::Actor;
use gatehouse::store::keys::{KeyFilter, Rotated};
use gatehouse::store::spend::CreditSpend;
use gatehouse::store::usage::{KeyUsage, UsageBatch};
use gatehouse::store::{KeyHash, KeyId, ProjectId, Store};

use crate::pg::{block_on, TestDb};

/// A backend under test, with a way to add rows the interface does not
/// cover yet (projects) and to count rows.
pub struct Backend {
    pub store: Arc<dyn Store>,
    sql: Box<dyn Fn(&str) -> i64 + Send + Sync>,
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Backend {
    /// Runs a statement (returning the first column of the first row, or 0).
    fn sql(&self, statement: &str) -> i64 {
        (self.sql)(statement)
    }

    fn project(&self, id: &str) {
        self.sql(&format!(
            "INSERT INTO projects (id, name, plan, created_at) VALUES ('{id}', '{id}', 'free', 0)"
        ));
    }
}

fn sqlite() -> Option<Backend> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.db");
    let db = gatehouse::store::sqlite::SqliteStore::open(&path, &Default::default()).unwrap();
    db.migrate().unwrap();
    let conn_path = path.clone();
    Some(Backend {
        store: Arc::new(db),
        sql: Box::new(move |s| {
            let conn = rusqlite::Connection::open(&conn_path).unwrap();
            if s.trim_start().to_ascii_uppercase().starts_with("SELECT") {
                conn.query_row(s, [], |r| r.get(0)).unwrap()
            } else {
                conn.execute(s, []).unwrap() as i64
            }
        }),
        _keep: Box::new(dir),
    })
}

fn postgres() -> Option<Backend> {
    let db = TestDb::create()?;
    let pool = gatehouse::store::postgres::pool(&db.url, 4).unwrap();
    block_on(gatehouse::store::postgres::migrate(&pool)).unwrap();
    let url = db.url.clone();
    Some(Backend {
        store: Arc::new(gatehouse::store::postgres::PgStore::new(pool, &db.url)),
        sql: Box::new(move |s| {
            let url = url.clone();
            let s = s.to_string();
            std::thread::spawn(move || {
                block_on(async move {
                    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    if s.trim_start().to_ascii_uppercase().starts_with("SELECT") {
                        client.query_one(&s, &[]).await.unwrap().get::<_, i64>(0)
                    } else {
                        client.execute(&s, &[]).await.unwrap() as i64
                    }
                })
            })
            .join()
            .unwrap()
        }),
        _keep: Box::new(db),
    })
}

pub fn run<F, Fut>(make: fn() -> Option<Backend>, test: F)
where
    F: FnOnce(Arc<Backend>) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(backend) = make() else { return };
    let backend = Arc::new(backend);
    block_on(test(backend.clone()));
    // Dropped here, outside the runtime (dropping a test database blocks).
    drop(backend);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $name() { super::run(super::sqlite, super::$name) } )*
        }
        mod postgres {
            $( #[test] fn $name() { super::run(super::postgres, super::$name) } )*
        }
    };
}

conformance!(
    keys_round_trip_and_page,
    max_keys_holds_under_concurrent_creates,
    edits_write_their_effects_and_the_change_feed,
    rotation_rules_hold,
    leaked_keys_are_revoked_once,
    imports_are_all_or_nothing,
    usage_adds_up_into_series_and_totals,
    the_audit_page_shows_the_project_and_its_members_sign_ins,
    webhook_endpoints_and_their_deliveries,
    due_deliveries_are_claimed_by_one_worker_with_a_lease,
    mail_is_claimed_by_one_worker_and_erased_once_sent,
    cleanup_removes_only_what_has_expired,
    throttles_count_every_hit_and_slide_across_windows,
    concurrent_demotions_never_leave_a_project_without_an_owner,
    send_code_is_throttled_across_concurrent_requests,
    a_code_logs_in_once_and_every_attempt_counts,
    concurrent_refreshes_of_one_token_have_one_winner,
    credits_are_spent_exactly_once,
    a_rotation_carries_the_balance_and_spends_follow_it,
    quotas_are_never_exceeded,
    a_customer_pays_for_one_project_under_concurrent_checkouts,
);

fn events() -> KeyEvents {
    KeyEvents {
        default_rate: gatehouse::config::RateLimitConfig {
            limit: 100,
            window_secs: 60,
        },
        now: gatehouse::clock::Clock::system().now(),
    }
}

fn new_key(project: &str, name: &str, created_at: i64) -> KeyRecord {
    let plain = ApiKey::generate("gate", KeyType::Secret);
    KeyRecord {
        id: Arc::from(format!("key_{}", fastrand::u64(..))),
        project_id: Arc::from(project),
        hash: plain.hash(),
        prefix: plain.display_prefix().to_string(),
        name: name.into(),
        kind: KeyType::Secret,
        environment: "production".into(),
        scopes: vec!["keys:read".into()],
        rate_limit: None,
        owner_id: Some("cus_1".into()),
        credits: Some(Balance {
            remaining: 9,
            refill: None,
            period_start: 0,
        }),
        allowed_ips: None,
        metadata: serde_json::json!({ "k": "v" }),
        created_at,
        updated_at: created_at,
        last_used_at: None,
        expires_at: None,
        revoked_at: None,
        created_by: None,
        rotated_to: None,
    }
}

async fn create(b: &Backend, project: &str, name: &str) -> KeyRecord {
    let k = new_key(project, name, gatehouse::clock::Clock::system().now());
    let effects = events().created(&k, &Actor::system());
    b.store
        .create_key(k, None, effects)
        .await
        .unwrap()
        .expect("created")
}

async fn keys_round_trip_and_page(b: Arc<Backend>) {
    b.project("proj_a");
    b.project("proj_b");
    let a1 = create(&b, "proj_a", "a1").await;
    let a2 = create(&b, "proj_a", "a2").await;
    create(&b, "proj_b", "b1").await;
    let found = b.store.find_key_by_hash(KeyHash(a1.hash)).await.unwrap();
    assert_eq!(found.as_ref(), Some(&a1));
    assert_eq!(
        b.store
            .find_key_by_id(KeyId::from(&a2.id))
            .await
            .unwrap()
            .as_ref(),
        Some(&a2)
    );
    assert_eq!(
        b.store
            .key(ProjectId::from("proj_b"), KeyId::from(&a1.id))
            .await
            .unwrap(),
        None,
        "only in its own project"
    );
    let (page, total) = b
        .store
        .keys_page(ProjectId::from("proj_a"), KeyFilter::default(), 0, 1)
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert_eq!(page.len(), 1);
    let filter = KeyFilter {
        include_inactive: false,
        owner_id: Some("nobody".into()),
    };
    let (_, total) = b
        .store
        .keys_page(ProjectId::from("proj_a"), filter, 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 0);
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action = 'key.created'"),
        3
    );
}

async fn max_keys_holds_under_concurrent_creates(b: Arc<Backend>) {
    b.project("proj_race");
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let k = new_key(
                    "proj_race",
                    &format!("k{i}"),
                    gatehouse::clock::Clock::system().now(),
                );
                b.store
                    .create_key(k, Some(5), Default::default())
                    .await
                    .unwrap()
                    .is_some()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        if t.await.unwrap() {
            created += 1;
        }
    }
    assert_eq!(created, 5);
    assert_eq!(b.sql("SELECT count(*) FROM api_keys"), 5);
}

async fn edits_write_their_effects_and_the_change_feed(b: Arc<Backend>) {
    b.project("proj_e");
    let k = create(&b, "proj_e", "edited").await;
    let before = b.store.key_feed_horizon().await.unwrap();
    let updated = b
        .store
        .update_key(
            ProjectId::from("proj_e"),
            KeyId::from(&k.id),
            Box::new(|k| {
                k.name = "renamed".into();
                events().changed(k, "key.updated", &Actor::system(), serde_json::json!({}))
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(updated.name, "renamed");
    assert!(updated.updated_at >= k.updated_at);
    let stored = b
        .store
        .find_key_by_hash(KeyHash(k.hash))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, updated);
    let read = b.store.read_key_changes(before).await.unwrap();
    assert_eq!(read.entries.len(), 1);
    assert_eq!(read.entries[0].key_hash, KeyHash(k.hash));
    assert!(read.next >= before, "the horizon never moves back");
    // Entries near the horizon may come again (the reader remembers what
    // it applied); nothing new appears.
    let again = b.store.read_key_changes(read.next).await.unwrap();
    assert!(
        again.entries.iter().all(|e| e == &read.entries[0]),
        "{again:?}"
    );
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action = 'key.updated'"),
        1
    );
    let missing = b
        .store
        .update_key(
            ProjectId::from("proj_other"),
            KeyId::from(&k.id),
            Box::new(|_| unreachable!("no such key in that project")),
        )
        .await
        .unwrap();
    assert!(missing.is_none());
}

async fn rotation_rules_hold(b: Arc<Backend>) {
    b.project("proj_r");
    let a = create(&b, "proj_r", "a").await;
    create(&b, "proj_r", "other").await;
    let rotate = |old: &KeyRecord, grace: Option<i64>, max: Option<u64>| {
        let b = b.clone();
        let old_id = KeyId::from(&old.id);
        let new = new_key("proj_r", "next", gatehouse::clock::Clock::system().now());
        async move {
            b.store
                .rotate_key(
                    ProjectId::from("proj_r"),
                    old_id,
                    new,
                    grace.map(|g| gatehouse::clock::Clock::system().now() + g),
                    max,
                    Box::new(|o, n, e| events().rotated(o, n, e, &Actor::system())),
                )
                .await
                .unwrap()
        }
    };
    // Keeping a through a grace would make 3 live keys.
    assert!(matches!(
        rotate(&a, Some(600), Some(2)).await,
        Rotated::Refused(RotationRefusal::PlanLimit)
    ));
    let Rotated::Done { old, new: b1, .. } = rotate(&a, Some(600), Some(3)).await else {
        panic!("rotation refused")
    };
    assert_eq!(old.rotated_to.as_deref(), Some(&*b1.id));
    assert!(old.revoked_at.is_none() && old.expires_at.is_some());
    match rotate(&a, None, None).await {
        Rotated::Refused(RotationRefusal::AlreadyRotated(s)) => assert_eq!(s, b1.id),
        other => panic!("{other:?}"),
    }
    // Rotating the successor ends a's grace.
    let Rotated::Done { ended_grace, .. } = rotate(&b1, Some(600), Some(3)).await else {
        panic!("rotation refused")
    };
    assert_eq!(ended_grace.map(|p| p.id.clone()), Some(a.id.clone()));
    let a_now = b
        .store
        .find_key_by_hash(KeyHash(a.hash))
        .await
        .unwrap()
        .unwrap();
    assert!(a_now.revoked_at.is_some());
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action = 'key.rotated'"),
        2
    );
    assert!(matches!(
        rotate(&new_key("proj_r", "ghost", 0), None, None).await,
        Rotated::NotFound
    ));
}

async fn leaked_keys_are_revoked_once(b: Arc<Backend>) {
    b.project("proj_l");
    let k = create(&b, "proj_l", "leaky").await;
    let report = || -> gatehouse::store::keys::LeakEffects {
        Box::new(|k| events().leaked(k, &Actor::system(), serde_json::json!({"url": "x"})))
    };
    let (first, revoked) = b
        .store
        .revoke_leaked(KeyHash(k.hash), report())
        .await
        .unwrap()
        .unwrap();
    assert!(revoked && first.revoked_at.is_some());
    let (_, again) = b
        .store
        .revoke_leaked(KeyHash(k.hash), report())
        .await
        .unwrap()
        .unwrap();
    assert!(!again);
    assert!(b
        .store
        .revoke_leaked(KeyHash([7; 32]), report())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action = 'key.leaked'"),
        1
    );
}

async fn imports_are_all_or_nothing(b: Arc<Backend>) {
    b.project("proj_i");
    let one = new_key("proj_i", "one", 1);
    let two = new_key("proj_i", "two", 1);
    let dup = KeyRecord {
        id: Arc::from("key_dup"),
        ..one.clone()
    };
    let imported =
        || -> gatehouse::store::keys::ImportEffects { Box::new(|k| events().imported(k)) };
    let refused = b
        .store
        .import_keys(vec![one.clone(), two.clone(), dup], imported())
        .await
        .unwrap();
    assert!(refused.unwrap_err().contains("line 3"));
    assert_eq!(b.sql("SELECT count(*) FROM api_keys"), 0);
    let n = b
        .store
        .import_keys(vec![one.clone(), two], imported())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    let hashes = b.store.imported_key_hashes().await.unwrap();
    assert!(hashes.contains(&KeyHash(one.hash)));
    assert_eq!(hashes.len(), 2);
}

fn usage(key: &KeyRecord, hour: i64, counts: [u64; 4], last_used: i64) -> UsageBatch {
    let mut batch = UsageBatch::default();
    let mut u = KeyUsage::new(key.project_id.clone());
    *u.hour(hour) = counts;
    u.last_used = Some(last_used);
    batch.keys.insert(key.id.clone(), u);
    batch
}

async fn usage_adds_up_into_series_and_totals(b: Arc<Backend>) {
    b.project("proj_u");
    let k1 = create(&b, "proj_u", "one").await;
    let k2 = create(&b, "proj_u", "two").await;
    let day = 1_795_305_600; // 2026-11-22T00:00Z
    for batch in [
        usage(&k1, day, [3, 1, 0, 0], day + 10),
        usage(&k1, day, [2, 0, 1, 1], day + 20),
        usage(&k1, day + 7200, [1, 0, 0, 0], day + 7300),
        usage(&k2, day + 3600, [10, 0, 0, 0], day + 3700),
    ] {
        b.store
            .write_usage(batch)
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
    let project = || ProjectId::from("proj_u");
    let hourly = b
        .store
        .usage_series(project(), None, day, day + 4 * 3600, 3600)
        .await
        .unwrap();
    let valid: Vec<u64> = hourly.iter().map(|(_, c)| c.valid).collect();
    assert_eq!(valid, vec![5, 10, 1, 0], "zero-filled, counts added");
    assert_eq!(hourly[0].1.invalid, 1);
    assert_eq!(hourly[0].1.rate_limited, 1);
    assert_eq!(hourly[0].1.refused, 1);
    let one_key = b
        .store
        .usage_series(
            project(),
            Some(KeyId::from(&k1.id)),
            day,
            day + 86_400,
            86_400,
        )
        .await
        .unwrap();
    assert_eq!(one_key.len(), 1);
    assert_eq!(one_key[0].1.valid, 6);
    assert_eq!(
        b.store
            .project_verifications_since(project(), day + 3600)
            .await
            .unwrap(),
        11
    );
    assert_eq!(
        b.sql(&format!(
            "SELECT last_used_at FROM api_keys WHERE id = '{}'",
            k1.id
        )),
        day + 7300
    );
}

async fn the_audit_page_shows_the_project_and_its_members_sign_ins(b: Arc<Backend>) {
    b.project("proj_au");
    b.project("proj_other");
    b.sql("INSERT INTO users (id, email, created_at) VALUES ('usr_m', 'm@acme.test', 0)");
    b.sql("INSERT INTO users (id, email, created_at) VALUES ('usr_x', 'x@acme.test', 0)");
    b.sql("INSERT INTO memberships (project_id, user_id, role, created_at) VALUES ('proj_au', 'usr_m', 'owner', 0)");
    for (project, action, actor) in [
        ("NULL", "login.succeeded", "usr_m"),
        ("NULL", "login.succeeded", "usr_x"),
        ("'proj_other'", "key.created", "usr_x"),
    ] {
        b.sql(&format!(
            "INSERT INTO audit_events (project_id, action, actor_type, actor_id, details, created_at)
             VALUES ({project}, '{action}', 'user', '{actor}', '{{}}', 1)"
        ));
    }
    create(&b, "proj_au", "a").await;
    create(&b, "proj_au", "b").await;
    let (page, total) = b
        .store
        .audit_page(ProjectId::from("proj_au"), Default::default(), 0, 2)
        .await
        .unwrap();
    assert_eq!(total, 3, "two key events and the member's sign-in");
    let actions: Vec<&str> = page.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, vec!["key.created", "key.created"], "newest first");
    assert!(page[0].id > page[1].id);
    assert_eq!(page[0].details["name"], "b");
    let (rest, _) = b
        .store
        .audit_page(ProjectId::from("proj_au"), Default::default(), 2, 2)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].actor_id.as_deref(), Some("usr_m"));

    // Filters narrow the page and its total, together.
    use gatehouse::store::audit::AuditFilter;
    let page_of = |filter: AuditFilter| {
        let b = b.clone();
        async move {
            let (page, total) = b
                .store
                .audit_page(ProjectId::from("proj_au"), filter, 0, 10)
                .await
                .unwrap();
            assert_eq!(page.len() as i64, total);
            page.into_iter()
                .map(|e| (e.action, e.actor_id))
                .collect::<Vec<_>>()
        }
    };
    let sign_ins = page_of(AuditFilter {
        action: Some("login.succeeded".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        sign_ins,
        vec![("login.succeeded".into(), Some("usr_m".into()))]
    );
    let by_member = page_of(AuditFilter {
        actor_type: Some("user".into()),
        actor_id: Some("usr_m".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_member.len(), 1);
    // The sign-in was recorded at 1; the key events now.
    let early = page_of(AuditFilter {
        until: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(early, sign_ins);
    let late = page_of(AuditFilter {
        since: Some(2),
        ..Default::default()
    })
    .await;
    assert_eq!(late.len(), 2);
    assert!(late.iter().all(|(action, _)| action == "key.created"));
    let none = page_of(AuditFilter {
        action: Some("key.created".into()),
        until: Some(2),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());
    let about_nothing = page_of(AuditFilter {
        target: Some("key_none".into()),
        ..Default::default()
    })
    .await;
    assert!(about_nothing.is_empty());
}

async fn webhook_endpoints_and_their_deliveries(b: Arc<Backend>) {
    b.project("proj_w");
    let p = || ProjectId::from("proj_w");
    let e = b
        .store
        .create_webhook(
            p(),
            "http://127.0.0.1:9/hook".into(),
            vec!["key.created".into()],
            "whsec_abc".into(),
            None,
        )
        .await
        .unwrap();
    assert_eq!(b.store.webhooks(p()).await.unwrap(), vec![e.clone()]);
    assert_eq!(
        b.store.webhook(p(), e.id.clone()).await.unwrap(),
        Some(e.clone())
    );
    assert_eq!(
        b.store
            .webhook(ProjectId::from("proj_other"), e.id.clone())
            .await
            .unwrap(),
        None
    );
    create(&b, "proj_w", "announced").await;
    b.store.send_test_event(p(), e.id.clone()).await.unwrap();
    let (list, total) = b.store.deliveries(e.id.clone(), 0, 10).await.unwrap();
    assert_eq!(total, 2);
    let kinds: Vec<&str> = list.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(kinds, vec![gatehouse::webhooks::TEST_EVENT, "key.created"]);
    let due = b
        .store
        .claim_due_deliveries(i64::MAX / 2, 10, 1000)
        .await
        .unwrap();
    let first = due.iter().find(|d| d.id == list[1].id).unwrap();
    assert!(first.payload.contains("\"key.created\""));
    b.store
        .record_attempt(
            gatehouse::store::work::Attempt {
                delivery_id: first.id,
                endpoint_id: e.id.clone(),
                number: 1,
                response_status: Some(500),
                error: None,
                duration_ms: 12,
            },
            gatehouse::store::work::AttemptOutcome::Retry(5_000),
        )
        .await
        .unwrap();
    let (list, _) = b.store.deliveries(e.id.clone(), 0, 10).await.unwrap();
    let retried = list.iter().find(|d| d.id == first.id).unwrap();
    assert_eq!(retried.status, "pending");
    assert_eq!(retried.next_attempt_at_ms, Some(5_000));
    assert_eq!(retried.attempts.len(), 1);
    assert_eq!(retried.attempts[0].response_status, Some(500));
    assert_eq!(b.store.next_delivery_due().await.unwrap(), Some(5_000));
    assert!(b.store.delete_webhook(p(), e.id.clone()).await.unwrap());
    assert!(!b.store.delete_webhook(p(), e.id.clone()).await.unwrap());
    assert_eq!(b.sql("SELECT count(*) FROM webhook_deliveries"), 0);
}

async fn due_deliveries_are_claimed_by_one_worker_with_a_lease(b: Arc<Backend>) {
    b.project("proj_c");
    let p = || ProjectId::from("proj_c");
    let e = b
        .store
        .create_webhook(
            p(),
            "http://127.0.0.1:9/".into(),
            vec!["key.created".into()],
            "whsec_x".into(),
            None,
        )
        .await
        .unwrap();
    for i in 0..6 {
        create(&b, "proj_c", &format!("k{i}")).await;
    }
    let now_ms = (gatehouse::clock::Clock::system().now() + 1) * 1000;
    let claims: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move {
                b.store
                    .claim_due_deliveries(now_ms, 10, 60_000)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for c in claims {
        ids.extend(c.await.unwrap().into_iter().map(|d| d.id));
    }
    ids.sort();
    let before = ids.len();
    ids.dedup();
    assert_eq!((before, ids.len()), (6, 6), "each delivery claimed once");
    assert!(b
        .store
        .claim_due_deliveries(now_ms, 10, 60_000)
        .await
        .unwrap()
        .is_empty());
    // The lease runs out: due again, same message ids (same webhook-id).
    let again = b
        .store
        .claim_due_deliveries(now_ms + 60_001, 10, 60_000)
        .await
        .unwrap();
    assert_eq!(again.len(), 6);
    let gone = &again[0];
    b.store
        .record_attempt(
            gatehouse::store::work::Attempt {
                delivery_id: gone.id,
                endpoint_id: e.id.clone(),
                number: 1,
                response_status: Some(410),
                error: None,
                duration_ms: 3,
            },
            gatehouse::store::work::AttemptOutcome::Gone,
        )
        .await
        .unwrap();
    assert!(
        b.store
            .claim_due_deliveries(i64::MAX / 2, 10, 1)
            .await
            .unwrap()
            .is_empty(),
        "410 fails every pending delivery of the endpoint"
    );
    let endpoint = b.store.webhook(p(), e.id.clone()).await.unwrap().unwrap();
    assert!(!endpoint.is_active);
}

async fn mail_is_claimed_by_one_worker_and_erased_once_sent(b: Arc<Backend>) {
    b.project("proj_m");
    let now = gatehouse::clock::Clock::system().now();
    let mut effects = gatehouse::store::effects::Effects::default();
    for i in 0..4 {
        effects.mail.push(gatehouse::store::work::Outgoing {
            transports: vec![
                gatehouse::store::work::Transport::Mailbox,
                gatehouse::store::work::Transport::Smtp,
            ],
            to: format!("user{i}@acme.test"),
            subject: "Your code".into(),
            body: format!("code {i}"),
            expires_at: now + 600,
        });
    }
    let k = new_key("proj_m", "with mail", now);
    b.store.create_key(k, None, effects).await.unwrap().unwrap();
    let mailbox = b.store.mailbox(10).await.unwrap();
    assert_eq!(mailbox.len(), 4);
    assert_eq!(mailbox[0].to, "user3@acme.test", "newest first");
    let claims: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.store.claim_due_mail(now + 1, 10, 60).await.unwrap() })
        })
        .collect();
    let mut claimed = Vec::new();
    for c in claims {
        claimed.extend(c.await.unwrap());
    }
    let mut ids: Vec<i64> = claimed.iter().map(|m| m.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((claimed.len(), ids.len()), (4, 4));
    assert_eq!(b.store.next_mail_due().await.unwrap(), Some(now + 61));
    b.store.mail_sent(ids[0], now + 2).await.unwrap();
    b.store
        .mail_failed(ids[1], "refused".into(), now + 30, false, now + 2)
        .await
        .unwrap();
    b.store
        .mail_failed(ids[2], "gone".into(), 0, true, now + 2)
        .await
        .unwrap();
    let due = b.store.claim_due_mail(now + 100, 10, 60).await.unwrap();
    let due_ids: Vec<i64> = due.iter().map(|m| m.id).collect();
    assert_eq!(
        due_ids,
        vec![ids[1], ids[3]],
        "retried and lease-expired, not sent or given up"
    );
    assert_eq!(due[0].attempts, 1);
    assert_eq!(
        b.sql("SELECT count(*) FROM mail_outbox WHERE transport = 'smtp' AND body = ''"),
        2,
        "bodies erased once sent or given up"
    );
}

async fn cleanup_removes_only_what_has_expired(b: Arc<Backend>) {
    b.store.ping().await.unwrap();
    let now = gatehouse::clock::Clock::system().now();
    b.sql(&format!(
        "INSERT INTO login_codes (email, code_hash, attempts, expires_at, created_at)
         VALUES ('old@acme.test', 'x', 0, {}, 0), ('new@acme.test', 'y', 0, {}, 0)",
        now - 1,
        now + 600
    ));
    b.sql(&format!(
        "INSERT INTO mail_outbox (transport, recipient, subject, body, created_at, expires_at, next_attempt_at, sent_at)
         VALUES ('mailbox', 'a@acme.test', 's', 'b', {old}, {old}, {old}, {old}),
                ('mailbox', 'b@acme.test', 's', 'b', {now}, {now}, {now}, {now})",
        old = now - 2 * 86_400,
    ));
    b.project("proj_cleanup");
    b.sql(&format!(
        "INSERT INTO quota_counters (project_id, period_start, used)
         VALUES ('proj_cleanup', {}, 7), ('proj_cleanup', {}, 3)",
        now - 62 * 86_400,
        now - 20 * 86_400,
    ));
    let removed = b
        .store
        .cleanup(gatehouse::store::maintenance::Retention {
            session_idle_secs: 86_400,
        })
        .await
        .unwrap();
    assert_eq!(removed, 3);
    assert_eq!(b.sql("SELECT count(*) FROM login_codes"), 1);
    assert_eq!(
        b.sql("SELECT used FROM quota_counters WHERE project_id = 'proj_cleanup'"),
        3,
        "the month that is over goes, the current one stays"
    );
    assert_eq!(
        b.sql("SELECT count(*) FROM mail_outbox WHERE recipient = 'b@acme.test'"),
        1
    );
}

async fn throttles_count_every_hit_and_slide_across_windows(b: Arc<Backend>) {
    let hit = |bucket: &'static str, now: i64| {
        let b = b.clone();
        async move {
            b.store
                .throttle_hit(bucket.to_string(), 60, 10, now)
                .await
                .unwrap()
        }
    };
    // 20 at once in one window, as several nodes would send them: exactly
    // the limit gets through.
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(hit("t:concurrent", 6_050)))
        .collect();
    let mut allowed = 0;
    for t in tasks {
        if t.await.unwrap().is_none() {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 10);
    // The next window, 10 s in: the 20 still weigh 20 * 50/60, refused.
    let wait = hit("t:concurrent", 6_070).await.expect("refused");
    assert!((1..=120).contains(&wait), "{wait}");
    // Later in the window, 20 * 5/60 + 2 is within 10.
    assert_eq!(hit("t:concurrent", 6_115).await, None);
    assert_eq!(
        b.sql("SELECT prev_hits * 100 + hits FROM throttles WHERE bucket = 't:concurrent'"),
        20 * 100 + 2
    );
    // Windows later, nothing of it is left.
    assert_eq!(hit("t:concurrent", 7_000).await, None);
    assert_eq!(
        b.sql("SELECT prev_hits FROM throttles WHERE bucket = 't:concurrent'"),
        0
    );
    // Another bucket is counted on its own.
    assert_eq!(hit("t:other", 6_070).await, None);
}

async fn concurrent_demotions_never_leave_a_project_without_an_owner(b: Arc<Backend>) {
    use gatehouse::store::directory::MemberChangeError;
    use gatehouse::types::Role;
    for round in 0..5 {
        let project = format!("proj_o{round}");
        b.project(&project);
        for who in ["a", "b"] {
            b.sql(&format!(
                "INSERT INTO users (id, email, created_at) VALUES ('usr_{who}{round}', '{who}{round}@acme.test', 0)"
            ));
            b.sql(&format!(
                "INSERT INTO memberships (project_id, user_id, role, created_at) VALUES ('{project}', 'usr_{who}{round}', 'owner', 0)"
            ));
        }
        // Each owner demotes the other, at once (remove one, demote one).
        let tasks: Vec<_> = [("a", "b", Some(Role::Member)), ("b", "a", None)]
            .into_iter()
            .map(|(actor, target, to)| {
                let b = b.clone();
                let project = project.clone();
                tokio::spawn(async move {
                    let actor = gatehouse::store::audit::Actor {
                        kind: gatehouse::store::audit::ActorType::User,
                        id: Some(format!("usr_{actor}{round}")),
                        ip: None,
                        request_id: None,
                    };
                    b.store
                        .change_member(
                            ProjectId::from(project.as_str()),
                            gatehouse::store::UserId::from(format!("usr_{target}{round}")),
                            to,
                            Role::Owner,
                            actor,
                        )
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        let refused = outcomes
            .iter()
            .filter(|o| matches!(o, Err(MemberChangeError::LastOwner)))
            .count();
        assert_eq!(refused, 1, "{outcomes:?}");
        assert_eq!(
            b.sql(&format!(
                "SELECT count(*) FROM memberships WHERE project_id = '{project}' AND role = 'owner'"
            )),
            1
        );
    }
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action IN ('member.role_changed', 'member.removed')"),
        5
    );
}

mod sessions {
    //! Codes and sessions under concurrent requests (as from several nodes).

    use std::sync::Arc;

    use gatehouse::store::audit::Actor;
    use gatehouse::store::sessions::{
        CodeLimits, CodeRequest, CodeRequestOutcome, LoginOutcome, LoginRequest, NewTokens,
        RefreshOutcome, SessionLimits,
    };
    use gatehouse::store::work::{Outgoing, Transport};
    use gatehouse::types::Email;

    use super::Backend;

    const LIMITS: SessionLimits = SessionLimits {
        idle_secs: 3600,
        max_secs: 86_400,
        reuse_grace_secs: 0,
    };

    fn tokens(seed: u8) -> NewTokens {
        NewTokens {
            access_hash: [seed; 32],
            refresh_hash: [seed.wrapping_add(100); 32],
            access_expires_at: gatehouse::clock::Clock::system().now() + 3600,
        }
    }

    fn code_request(email: &str, code: u8) -> CodeRequest {
        CodeRequest {
            email: Email::parse(email).unwrap(),
            ip: "192.0.2.7".into(),
            code_hash: [code; 32],
            limits: CodeLimits {
                interval_secs: 60,
                per_hour: 5,
                per_ip_per_hour: 20,
            },
            open_signup: true,
            expires_at: gatehouse::clock::Clock::system().expires_after(600),
            message: Outgoing {
                transports: vec![Transport::Mailbox],
                to: email.into(),
                subject: "code".into(),
                body: "code".into(),
                expires_at: gatehouse::clock::Clock::system().now() + 600,
            },
        }
    }

    fn login(email: &str, presented: u8, session: &str, seed: u8) -> LoginRequest {
        LoginRequest {
            email: Email::parse(email).unwrap(),
            presented_hash: [presented; 32],
            stand_in_hash: [0xee; 32],
            max_attempts: 5,
            open_signup: true,
            session_id: session.into(),
            via_cookie: false,
            tokens: tokens(seed),
            limits: LIMITS,
            session_expires_at: gatehouse::clock::Clock::system().expires_after(LIMITS.max_secs),
            personal_project: ("Personal".into(), "free".into()),
            actor: Actor::system(),
            user_agent: None,
        }
    }

    /// Runs `n` copies of a call at once and collects the outcomes.
    async fn at_once<T: Send + 'static, F>(n: usize, call: impl Fn(usize) -> F) -> Vec<T>
    where
        F: std::future::Future<Output = T> + Send + 'static,
    {
        let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(call(i))).collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    pub async fn send_code_is_throttled_across_concurrent_requests(b: Arc<Backend>) {
        let outcomes = at_once(6, |_| {
            let b = b.clone();
            async move {
                b.store
                    .request_login_code(code_request("racer@acme.test", 1))
                    .await
                    .unwrap()
            }
        })
        .await;
        let sent = outcomes
            .iter()
            .filter(|o| **o == CodeRequestOutcome::Sent)
            .count();
        assert_eq!(sent, 1, "one code per interval: {outcomes:?}");
        assert_eq!(
            b.sql("SELECT count(*) FROM mail_outbox WHERE recipient = 'racer@acme.test'"),
            1
        );
    }

    pub async fn a_code_logs_in_once_and_every_attempt_counts(b: Arc<Backend>) {
        let email = "coder@acme.test";
        let sent = b
            .store
            .request_login_code(code_request(email, 7))
            .await
            .unwrap();
        assert_eq!(sent, CodeRequestOutcome::Sent);
        // Three wrong tries and two right ones at once: the wrong ones are
        // all counted, and the code logs in at most once.
        let outcomes = at_once(5, |i| {
            let b = b.clone();
            let presented = if i < 3 { 9 } else { 7 };
            async move {
                b.store
                    .login_with_code(login(email, presented, &format!("ses_c{i}"), 10 + i as u8))
                    .await
                    .unwrap()
            }
        })
        .await;
        let logged_in = outcomes
            .iter()
            .filter(|o| matches!(o, LoginOutcome::Success { .. }))
            .count();
        assert_eq!(logged_in, 1, "{outcomes:?}");
        assert_eq!(b.sql("SELECT count(*) FROM sessions"), 1);
        assert_eq!(
            b.sql("SELECT count(*) FROM users WHERE email = 'coder@acme.test'"),
            1
        );
        assert_eq!(
            b.sql("SELECT count(*) FROM audit_events WHERE action = 'login.failed'"),
            4,
            "three wrong codes and the second right one (spent by then)"
        );
        // Burned after max_attempts wrong tries, whoever makes them.
        b.store
            .request_login_code(code_request("burn@acme.test", 3))
            .await
            .ok();
        at_once(5, |i| {
            let b = b.clone();
            async move {
                b.store
                    .login_with_code(login(
                        "burn@acme.test",
                        4,
                        &format!("ses_b{i}"),
                        40 + i as u8,
                    ))
                    .await
                    .unwrap()
            }
        })
        .await;
        assert_eq!(
            b.sql("SELECT attempts FROM login_codes WHERE email = 'burn@acme.test'"),
            5
        );
        let late = b
            .store
            .login_with_code(login("burn@acme.test", 3, "ses_late", 60))
            .await
            .unwrap();
        assert!(
            matches!(late, LoginOutcome::Failed),
            "the right code after 5 wrong ones"
        );
    }

    pub async fn concurrent_refreshes_of_one_token_have_one_winner(b: Arc<Backend>) {
        for round in 0..5u8 {
            let email = format!("refresher{round}@acme.test");
            b.store
                .request_login_code(code_request(&email, 20 + round))
                .await
                .unwrap();
            let session = format!("ses_r{round}");
            let seed = 100 + round * 10;
            let outcome = b
                .store
                .login_with_code(login(&email, 20 + round, &session, seed))
                .await
                .unwrap();
            assert!(matches!(outcome, LoginOutcome::Success { .. }));
            let presented = tokens(seed).refresh_hash;
            let outcomes = at_once(2, |i| {
                let b = b.clone();
                async move {
                    b.store
                        .refresh_session(
                            presented,
                            tokens(seed + 1 + i as u8),
                            LIMITS,
                            Actor::system(),
                        )
                        .await
                        .unwrap()
                }
            })
            .await;
            let rotated = outcomes
                .iter()
                .filter(|o| matches!(o, RefreshOutcome::Rotated { .. }))
                .count();
            let reused = outcomes
                .iter()
                .filter(|o| matches!(o, RefreshOutcome::Reused))
                .count();
            // Without a grace period the second presentation is reuse,
            // which revokes the session.
            assert_eq!((rotated, reused), (1, 1), "{outcomes:?}");
            assert_eq!(
                b.sql(&format!(
                    "SELECT count(*) FROM sessions WHERE id = '{session}' AND revoked_at IS NOT NULL"
                )),
                1
            );
        }
    }
}

use sessions::{
    a_code_logs_in_once_and_every_attempt_counts,
    concurrent_refreshes_of_one_token_have_one_winner,
    send_code_is_throttled_across_concurrent_requests,
};

// Credits and quotas spent in storage (store::spend): exact under
// concurrent spends, as several nodes would make them.

async fn spend_all(b: &Arc<Backend>, key: &str, n: usize, cost: i64) -> Vec<CreditSpend> {
    let now = gatehouse::clock::Clock::system().now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let b = b.clone();
            let key = KeyId::from(key);
            tokio::spawn(async move { b.store.spend_credits(key, cost, now).await.unwrap() })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn credits_are_spent_exactly_once(b: Arc<Backend>) {
    b.project("proj_c");
    let key = create(&b, "proj_c", "metered").await;
    b.sql(&format!(
        "UPDATE api_keys SET credits_remaining = 50 WHERE id = '{}'",
        key.id
    ));
    let outcomes = spend_all(&b, &key.id, 80, 1).await;
    let spent = outcomes
        .iter()
        .filter(|o| matches!(o, CreditSpend::Spent { .. }))
        .count();
    assert_eq!(spent, 50, "{outcomes:?}");
    assert!(outcomes
        .iter()
        .all(|o| !matches!(o, CreditSpend::Insufficient { remaining } if *remaining != 0)));
    let remaining = format!(
        "SELECT credits_remaining FROM api_keys WHERE id = '{}'",
        key.id
    );
    assert_eq!(b.sql(&remaining), 0);
    let now = gatehouse::clock::Clock::system().now();
    let id = || KeyId::from(&key.id);
    // Never below zero, and a cost of 0 only reads.
    assert_eq!(
        b.store.spend_credits(id(), 1, now).await.unwrap(),
        CreditSpend::Insufficient { remaining: 0 }
    );
    assert!(matches!(
        b.store.spend_credits(id(), 0, now).await.unwrap(),
        CreditSpend::Spent { remaining: 0, .. }
    ));
    // A refund gives back, within the same refill period only.
    b.store.refund_credits(id(), 3, 0).await.unwrap();
    assert_eq!(b.sql(&remaining), 3);
    b.store.refund_credits(id(), 3, 12345).await.unwrap();
    assert_eq!(b.sql(&remaining), 3);
    let CreditSpend::Spent {
        remaining: 1,
        period_start,
    } = b.store.spend_credits(id(), 2, now).await.unwrap()
    else {
        panic!("a spend of 2 out of 3")
    };
    b.store.refund_credits(id(), 2, period_start).await.unwrap();
    assert_eq!(b.sql(&remaining), 3);
    // A daily refill applies before the spend, once per day.
    b.sql(&format!(
        "UPDATE api_keys SET credits_refill_amount = 10, credits_refill_interval = 'daily', credits_period_start = 0 WHERE id = '{}'",
        key.id
    ));
    let day = gatehouse::keys::credits::Interval::Daily.period_start(now);
    assert_eq!(
        b.store.spend_credits(id(), 4, now).await.unwrap(),
        CreditSpend::Spent {
            remaining: 6,
            period_start: day
        }
    );
    assert_eq!(
        b.store.spend_credits(id(), 7, now).await.unwrap(),
        CreditSpend::Insufficient { remaining: 6 }
    );
    // Without a limit any more: unlimited.
    b.sql(&format!(
        "UPDATE api_keys SET credits_remaining = NULL, credits_refill_amount = NULL, credits_refill_interval = NULL WHERE id = '{}'",
        key.id
    ));
    assert_eq!(
        b.store.spend_credits(id(), 5, now).await.unwrap(),
        CreditSpend::Unlimited
    );
    assert_eq!(
        b.store
            .spend_credits(KeyId::from("key_unknown"), 1, now)
            .await
            .unwrap(),
        CreditSpend::Insufficient { remaining: 0 }
    );
}

async fn a_rotation_carries_the_balance_and_spends_follow_it(b: Arc<Backend>) {
    b.project("proj_cr");
    let old = create(&b, "proj_cr", "old").await;
    b.sql(&format!(
        "UPDATE api_keys SET credits_remaining = 20 WHERE id = '{}'",
        old.id
    ));
    // Spends race the rotation: whatever was spent before it is gone from
    // the balance it carries over, whatever after it is taken from the new key.
    let spends = {
        let b = b.clone();
        let id = old.id.to_string();
        tokio::spawn(async move { spend_all(&b, &id, 10, 1).await })
    };
    let mut next = new_key("proj_cr", "new", gatehouse::clock::Clock::system().now());
    next.credits = None; // the store carries the stored balance over
    let rotated = b
        .store
        .rotate_key(
            ProjectId::from("proj_cr"),
            KeyId::from(&old.id),
            next,
            Some(gatehouse::clock::Clock::system().now() + 600),
            None,
            Box::new(|o, n, e| events().rotated(o, n, e, &Actor::system())),
        )
        .await
        .unwrap();
    let Rotated::Done { new, .. } = rotated else {
        panic!("rotation refused")
    };
    let outcomes = spends.await.unwrap();
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, CreditSpend::Spent { .. })));
    // Five more through the old key's id (a node whose cache is behind).
    let more = spend_all(&b, &old.id, 5, 1).await;
    assert!(more.iter().all(|o| matches!(o, CreditSpend::Spent { .. })));
    assert_eq!(
        b.sql(&format!(
            "SELECT credits_remaining FROM api_keys WHERE id = '{}'",
            new.id
        )),
        5,
        "20 - 10 - 5, every spend counted once"
    );
}

async fn quotas_are_never_exceeded(b: Arc<Backend>) {
    use gatehouse::store::spend::QuotaSpend;
    b.project("proj_q"); // on the plan "free"
    let now = gatehouse::clock::Clock::system().now();
    let month = gatehouse::keys::credits::Interval::Monthly.period_start(now);
    // Counted before the counter existed: it starts from there.
    b.sql(&format!(
        "INSERT INTO usage_hourly (key_id, project_id, hour, valid, invalid, rate_limited, refused) VALUES ('key_q', 'proj_q', {month}, 3, 0, 0, 0)"
    ));
    let spend = |plan: &'static str, limit: u64, at: i64| {
        let b = b.clone();
        async move {
            b.store
                .spend_quota(ProjectId::from("proj_q"), plan.to_string(), limit, at)
                .await
                .unwrap()
        }
    };
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(spend("free", 10, now)))
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let spent = outcomes.iter().filter(|o| **o == QuotaSpend::Spent).count();
    assert_eq!(spent, 7);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, QuotaSpend::Spent | QuotaSpend::Exhausted)));
    assert_eq!(
        b.sql("SELECT used FROM quota_counters WHERE project_id = 'proj_q'"),
        10
    );
    // A new month starts afresh.
    let next_month = now + 32 * 86_400;
    assert_eq!(spend("free", 10, next_month).await, QuotaSpend::Spent);
    assert_eq!(spend("free", 0, now).await, QuotaSpend::Exhausted);
    // A node that still believes in the old plan counts nothing: it is
    // told the plan changed, whatever limit it had.
    b.sql("UPDATE projects SET plan = 'pro' WHERE id = 'proj_q'");
    assert_eq!(
        spend("free", 1_000, next_month).await,
        QuotaSpend::PlanChanged
    );
    assert_eq!(spend("pro", 1_000, next_month).await, QuotaSpend::Spent);
    assert_eq!(
        b.sql(&format!(
            "SELECT used FROM quota_counters WHERE project_id = 'proj_q' AND period_start > {month}"
        )),
        2
    );
}

/// SPEC section 10: checkouts of one customer for several projects, and of
/// several customers for one project, delivered at once: one link is made,
/// every other event is recorded as not applied (no error, so no retry), and
/// a retry of any is a duplicate. By hand, a customer is moved only with
/// `force`, its plan with it.
async fn a_customer_pays_for_one_project_under_concurrent_checkouts(b: Arc<Backend>) {
    use gatehouse::billing::link::{LinkDecision, Refusal};
    use gatehouse::billing::Action;
    use gatehouse::store::billing::StripeOutcome;

    async fn deliver_at_once(
        b: &Arc<Backend>,
        links: Vec<(String, String, String)>,
    ) -> Vec<StripeOutcome> {
        let tasks: Vec<_> = links
            .into_iter()
            .map(|(event, project_id, customer)| {
                let b = b.clone();
                tokio::spawn(async move {
                    b.store
                        .apply_stripe_event(
                            event,
                            "checkout.session.completed".into(),
                            Action::Link {
                                project_id,
                                customer,
                            },
                        )
                        .await
                        .expect("never an error")
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(t.await.unwrap());
        }
        outcomes
    }
    fn count(outcomes: &[StripeOutcome], linked: bool) -> usize {
        outcomes
            .iter()
            .filter(|o| match o {
                StripeOutcome::Recorded(note) => linked && note == "linked",
                StripeOutcome::NotApplied(_) => !linked,
                _ => false,
            })
            .count()
    }

    // One customer, six projects.
    for i in 0..6 {
        b.project(&format!("proj_s{i}"));
    }
    let outcomes = deliver_at_once(
        &b,
        (0..6)
            .map(|i| (format!("evt_s{i}"), format!("proj_s{i}"), "cus_race".into()))
            .collect(),
    )
    .await;
    assert_eq!(count(&outcomes, true), 1, "{outcomes:?}");
    assert_eq!(count(&outcomes, false), 5, "{outcomes:?}");
    assert_eq!(
        b.sql("SELECT count(*) FROM projects WHERE stripe_customer_id = 'cus_race'"),
        1
    );
    // One project, six customers.
    b.project("proj_t");
    let outcomes = deliver_at_once(
        &b,
        (0..6)
            .map(|i| (format!("evt_t{i}"), "proj_t".into(), format!("cus_t{i}")))
            .collect(),
    )
    .await;
    assert_eq!(count(&outcomes, true), 1, "{outcomes:?}");
    assert_eq!(count(&outcomes, false), 5, "{outcomes:?}");
    assert_eq!(
        b.sql("SELECT count(*) FROM projects WHERE id = 'proj_t' AND stripe_customer_id LIKE 'cus_t%'"),
        1
    );
    assert_eq!(b.sql("SELECT count(*) FROM stripe_events"), 12);
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action = 'billing.stripe_event_ignored'"),
        10
    );
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action = 'billing.customer_linked'"),
        2
    );
    // Stripe's retries change nothing.
    let retried = deliver_at_once(
        &b,
        vec![
            ("evt_s0".into(), "proj_s0".into(), "cus_race".into()),
            ("evt_t0".into(), "proj_t".into(), "cus_t0".into()),
        ],
    )
    .await;
    assert_eq!(
        retried,
        [StripeOutcome::Duplicate, StripeOutcome::Duplicate]
    );

    // By hand: refused without force, moved with it, the plan following.
    let winner = (0..6)
        .find(|i| {
            b.sql(&format!(
                "SELECT count(*) FROM projects WHERE id = 'proj_s{i}' AND stripe_customer_id = 'cus_race'"
            )) == 1
        })
        .unwrap();
    let (from, to) = (
        format!("proj_s{winner}"),
        format!("proj_s{}", (winner + 1) % 6),
    );
    b.sql("UPDATE projects SET plan = 'pro' WHERE stripe_customer_id = 'cus_race'");
    let refused = b
        .store
        .link_stripe_customer(
            ProjectId::from(to.as_str()),
            "cus_race".into(),
            false,
            "free".into(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            refused.decision,
            LinkDecision::Refused(Refusal::CustomerLinkedElsewhere { .. })
        ),
        "{refused:?}"
    );
    assert!(refused.plan_changes.is_empty());
    let moved = b
        .store
        .link_stripe_customer(
            ProjectId::from(to.as_str()),
            "cus_race".into(),
            true,
            "free".into(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            moved.decision,
            LinkDecision::Link {
                taken_from: Some(_),
                ..
            }
        ),
        "{moved:?}"
    );
    assert_eq!(
        b.sql(&format!("SELECT count(*) FROM projects WHERE id = '{to}' AND stripe_customer_id = 'cus_race' AND plan = 'pro'")),
        1
    );
    assert_eq!(
        b.sql(&format!("SELECT count(*) FROM projects WHERE id = '{from}' AND stripe_customer_id IS NULL AND plan = 'free'")),
        1
    );
    assert_eq!(
        b.sql("SELECT count(*) FROM audit_events WHERE action = 'billing.customer_unlinked'"),
        1
    );
}
