//! The storage conformance suite: the same tests against every backend,
//! through the storage interface only. Each test appears once per backend
//! (`conformance::sqlite::*`, `conformance::postgres::*`), so the output
//! shows how many ran on each.

use std::future::Future;
use std::sync::Arc;

use gatehouse::db::audit::Actor;
use gatehouse::db::keys::{KeyFilter, Rotated};
use gatehouse::keys::credits::Balance;
use gatehouse::keys::events::{KeyEvents, RotationRefusal};
use gatehouse::keys::record::KeyRecord;
use gatehouse::keys::{ApiKey, KeyType};
use gatehouse::store::keys::KeyRepo;
use gatehouse::store::{KeyHash, KeyId, ProjectId};

use crate::pg::{block_on, TestDb};

/// A backend under test, with a way to add rows the interface does not
/// cover yet (projects) and to count rows.
pub struct Backend {
    pub store: Arc<dyn KeyRepo>,
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
    let db = gatehouse::db::Db::open(&path, &Default::default()).unwrap();
    db.migrate().unwrap();
    let conn_path = path.clone();
    Some(Backend {
        store: Arc::new(gatehouse::store::sqlite::SqliteStore::new(db)),
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
        store: Arc::new(gatehouse::store::postgres::PgStore::new(pool)),
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
);

fn events() -> KeyEvents {
    KeyEvents {
        default_rate: gatehouse::config::RateLimitConfig {
            limit: 100,
            window_secs: 60,
        },
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
    let k = new_key(project, name, gatehouse::types::now());
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
                let k = new_key("proj_race", &format!("k{i}"), gatehouse::types::now());
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
    let before = b.store.last_key_change().await.unwrap();
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
    let changes = b.store.key_changes_since(before, 10).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].1, KeyHash(k.hash));
    assert_eq!(b.store.last_key_change().await.unwrap(), changes[0].0);
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
        let new = new_key("proj_r", "next", gatehouse::types::now());
        async move {
            b.store
                .rotate_key(
                    ProjectId::from("proj_r"),
                    old_id,
                    new,
                    grace.map(|g| gatehouse::types::now() + g),
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
