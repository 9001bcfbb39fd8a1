//! Usage written as increments from several nodes adds up exactly; the
//! effects of a change are written with it.

use std::sync::Arc;

use gatehouse::store::audit::{Actor, AuditEvent};
use gatehouse::store::postgres::{self, effects, usage};
use gatehouse::store::usage::{KeyUsage, UsageBatch};
use gatehouse::store::work::{Outgoing, Transport};

use crate::pg::{block_on, TestDb};

fn batch(key: &str, hour: i64, valid: u64, last_used: i64) -> UsageBatch {
    let mut b = UsageBatch::default();
    let mut u = KeyUsage::new(Arc::from("proj_u"));
    u.hour(hour)[0] = valid;
    u.hour(hour)[2] = 1;
    u.last_used = Some(last_used);
    b.keys.insert(Arc::from(key), u);
    b
}

#[test]
fn increments_from_many_nodes_add_up() {
    let Some(db) = TestDb::create() else { return };
    block_on(async {
        let setup = postgres::pool(&db.url, 1).unwrap();
        postgres::migrate(&setup).await.unwrap();
        setup
            .get()
            .await
            .unwrap()
            .batch_execute(
                "INSERT INTO projects (id, name, plan, created_at) VALUES ('proj_u', 'u', 'free', 0);
                 INSERT INTO api_keys (id, project_id, key_hash, prefix, name, type, environment, created_at, updated_at, last_used_at)
                 VALUES ('key_u', 'proj_u', '\\x00', 'p', 'n', 'secret', 'production', 0, 0, 5000);",
            )
            .await
            .unwrap();
        // Three nodes, each flushing 10 batches at once.
        let tasks: Vec<_> = (0..3)
            .map(|node| {
                let url = db.url.clone();
                tokio::spawn(async move {
                    let pool = postgres::pool(&url, 2).unwrap();
                    for i in 0..10 {
                        let mut client = pool.get().await.unwrap();
                        let b = batch("key_u", 3600, 7, 1000 + node * 100 + i);
                        usage::write_usage(&mut client, &b).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    assert_eq!(db.query_i64("SELECT valid FROM usage_hourly"), 3 * 10 * 7);
    assert_eq!(db.query_i64("SELECT rate_limited FROM usage_hourly"), 30);
    assert_eq!(
        db.query_i64("SELECT last_used_at FROM api_keys"),
        5000,
        "last_used_at never moves back"
    );
    block_on(async {
        let pool = postgres::pool(&db.url, 1).unwrap();
        let mut client = pool.get().await.unwrap();
        usage::write_usage(&mut client, &batch("key_u", 7200, 1, 9000))
            .await
            .unwrap();
    });
    assert_eq!(db.query_i64("SELECT last_used_at FROM api_keys"), 9000);
    assert_eq!(
        db.query_i64("SELECT sum(valid)::BIGINT FROM usage_hourly"),
        211
    );
}

#[test]
fn effects_are_written_with_the_change_or_not_at_all() {
    let Some(db) = TestDb::create() else { return };
    block_on(async {
        let pool = postgres::pool(&db.url, 1).unwrap();
        postgres::migrate(&pool).await.unwrap();
        let mut client = pool.get().await.unwrap();
        client
            .batch_execute(
                "INSERT INTO projects (id, name, plan, created_at) VALUES ('proj_e', 'e', 'free', 0);
                 INSERT INTO webhook_endpoints (id, project_id, url, events, secret, created_at)
                 VALUES ('wh_1', 'proj_e', 'http://127.0.0.1:9/', '[\"key.revoked\"]', 'whsec_x', 0),
                        ('wh_2', 'proj_e', 'http://127.0.0.1:9/', '[\"key.created\"]', 'whsec_y', 0);",
            )
            .await
            .unwrap();
        let actor = Actor::system();
        for commit in [false, true] {
            let tx = client.transaction().await.unwrap();
            effects::record_audit(
                &tx,
                &AuditEvent {
                    project_id: Some("proj_e"),
                    action: "key.revoked",
                    actor: &actor,
                    target: Some("key_1"),
                    details: serde_json::json!({ "why": "test" }),
                },
                100,
            )
            .await
            .unwrap();
            let msg = effects::emit(
                &tx,
                "proj_e",
                "key.revoked",
                serde_json::json!({"id": "key_1"}),
                100,
            )
            .await
            .unwrap();
            assert!(msg.is_some());
            assert!(
                effects::emit(&tx, "proj_e", "member.added", serde_json::json!({}), 100)
                    .await
                    .unwrap()
                    .is_none()
            );
            effects::enqueue_mail(
                &tx,
                &Outgoing {
                    transports: vec![Transport::Mailbox, Transport::Smtp],
                    to: "a@acme.test".into(),
                    subject: "s".into(),
                    body: "b".into(),
                    expires_at: 700,
                },
                100,
            )
            .await
            .unwrap();
            if commit {
                tx.commit().await.unwrap();
            } else {
                tx.rollback().await.unwrap();
            }
        }
    });
    assert_eq!(db.query_i64("SELECT count(*) FROM audit_events"), 1);
    assert_eq!(db.query_i64("SELECT count(*) FROM webhook_messages"), 1);
    assert_eq!(
        db.query_i64("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = 'wh_1' AND status = 'pending'"),
        1
    );
    assert_eq!(db.query_i64("SELECT count(*) FROM webhook_deliveries"), 1);
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM mail_outbox WHERE transport = 'smtp' AND sent_at IS NULL"
        ),
        1
    );
    assert_eq!(
        db.query_i64(
            "SELECT count(*) FROM mail_outbox WHERE transport = 'mailbox' AND sent_at = 100"
        ),
        1
    );
}

/// Two nodes flushing usage of the same keys at the same time must not
/// deadlock: each batch is a HashMap, iterated in its own order, and the
/// rows were once locked in that order (found by scripts/soak.sh: `GET
/// /api/v1/usage`, which flushes first, answered 503 "deadlock detected").
/// `store::postgres::usage::write_usage` now writes keys (and each key's
/// hours) sorted, so every transaction locks rows in one order.
#[test]
fn flushes_of_the_same_keys_from_two_nodes_do_not_deadlock() {
    let Some(db) = TestDb::create() else { return };
    const KEYS: usize = 200;
    let deadlocks = block_on(async {
        let setup = postgres::pool(&db.url, 1).unwrap();
        postgres::migrate(&setup).await.unwrap();
        let mut sql = String::from(
            "INSERT INTO projects (id, name, plan, created_at) VALUES ('proj_u', 'u', 'free', 0);",
        );
        for k in 0..KEYS {
            sql.push_str(&format!(
                "INSERT INTO api_keys (id, project_id, key_hash, prefix, name, type, environment, created_at, updated_at)
                 VALUES ('key_{k}', 'proj_u', '\\x{k:04x}', 'p', 'n', 'secret', 'production', 0, 0);"
            ));
        }
        setup
            .get()
            .await
            .unwrap()
            .batch_execute(&sql)
            .await
            .unwrap();
        let tasks: Vec<_> = (0..2)
            .map(|_| {
                let url = db.url.clone();
                tokio::spawn(async move {
                    let pool = postgres::pool(&url, 1).unwrap();
                    let mut failures = Vec::new();
                    for round in 0..10 {
                        // A new map per batch: its own iteration order.
                        let mut b = UsageBatch::default();
                        for k in 0..KEYS {
                            let mut u = KeyUsage::new(Arc::from("proj_u"));
                            u.hour(3600)[0] = 1;
                            u.last_used = Some(4000 + round);
                            b.keys.insert(Arc::from(format!("key_{k}")), u);
                        }
                        let mut client = pool.get().await.unwrap();
                        if let Err(e) = usage::write_usage(&mut client, &b).await {
                            failures.push(e.to_string());
                        }
                    }
                    failures
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all
    });
    assert!(deadlocks.is_empty(), "{deadlocks:?}");
    assert_eq!(
        db.query_i64("SELECT CAST(sum(valid) AS BIGINT) FROM usage_hourly"),
        (2 * 10 * KEYS) as i64
    );
}
