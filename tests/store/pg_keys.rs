//! Key rows in PostgreSQL: a full round trip, and the `max_keys` race
//! closed by the project row lock.

use std::sync::Arc;

use gatehouse::config::{Cidr, RateLimitConfig};
use gatehouse::keys::credits::{Balance, Interval, Refill};
use gatehouse::keys::feed::FeedCursor;
use gatehouse::keys::record::KeyRecord;
use gatehouse::keys::{ApiKey, KeyType};
use gatehouse::store::keys::FeedHorizon;
use gatehouse::store::postgres::{self, keys};
use gatehouse::store::KeyHash;

use crate::pg::{block_on, TestDb};

fn key(project: &str, name: &str) -> KeyRecord {
    let plain = ApiKey::generate("gate", KeyType::Publishable);
    KeyRecord {
        id: Arc::from(format!("key_{}", fastrand::u64(..))),
        project_id: Arc::from(project),
        hash: plain.hash(),
        prefix: plain.display_prefix().to_string(),
        name: name.into(),
        kind: KeyType::Publishable,
        environment: "staging".into(),
        scopes: vec!["keys:read".into(), "orders:write".into()],
        rate_limit: Some(RateLimitConfig {
            limit: 7,
            window_secs: 90,
        }),
        owner_id: Some("cus_42".into()),
        credits: Some(Balance {
            remaining: 12,
            refill: Some(Refill {
                amount: 50,
                interval: Interval::Monthly,
            }),
            period_start: 1_793_491_200,
        }),
        allowed_ips: Some(vec![
            "10.0.0.0/8".parse::<Cidr>().unwrap(),
            "2001:db8::1".parse().unwrap(),
        ]),
        metadata: serde_json::json!({ "tier": "gold", "n": [1, 2] }),
        created_at: 1_795_000_000,
        updated_at: 1_795_000_001,
        last_used_at: Some(1_795_000_002),
        expires_at: Some(1_900_000_000),
        revoked_at: None,
        created_by: Some("usr_1".into()),
        rotated_to: None,
    }
}

async fn project(pool: &deadpool_postgres::Pool, id: &str) {
    pool.get()
        .await
        .unwrap()
        .execute(
            "INSERT INTO projects (id, name, plan, created_at) VALUES ($1, $1, 'free', 0)",
            &[&id],
        )
        .await
        .unwrap();
}

#[test]
fn a_key_row_round_trips_every_field() {
    let Some(db) = TestDb::create() else { return };
    block_on(async {
        let pool = postgres::pool(&db.url, 2).unwrap();
        postgres::migrate(&pool).await.unwrap();
        project(&pool, "proj_a").await;
        let mut k = key("proj_a", "everything");
        let client = pool.get().await.unwrap();
        keys::insert_key(&client, &k, false, None).await.unwrap();
        let back = keys::key_by_hash(&client, &k.hash, false).await.unwrap();
        assert_eq!(back.as_ref(), Some(&k));
        k.revoked_at = Some(1_795_000_100);
        k.rotated_to = Some(Arc::from("key_next"));
        k.credits = None;
        k.allowed_ips = None;
        keys::store_key(&client, &k).await.unwrap();
        let back = keys::key_by_id(&client, "proj_a", &k.id, false)
            .await
            .unwrap();
        assert_eq!(back, Some(k.clone()));
        assert_eq!(
            keys::key_by_id(&client, "proj_other", &k.id, false)
                .await
                .unwrap(),
            None,
            "a key is found only in its own project"
        );
    });
}

#[test]
fn concurrent_creates_never_exceed_max_keys() {
    let Some(db) = TestDb::create() else { return };
    let created = block_on(async {
        let pool = postgres::pool(&db.url, 20).unwrap();
        postgres::migrate(&pool).await.unwrap();
        project(&pool, "proj_race").await;
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let mut client = pool.get().await.unwrap();
                    let k = key("proj_race", &format!("k{i}"));
                    keys::create_key(&mut client, &k, Some(5), &Default::default())
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            if t.await.unwrap().is_some() {
                created += 1;
            }
        }
        created
    });
    assert_eq!(created, 5);
    assert_eq!(db.query_i64("SELECT count(*) FROM api_keys"), 5);
}

/// A change whose transaction took its id first and committed last is still
/// read (SPEC section 14): the feed follows commit order, not ids.
#[test]
fn the_change_feed_reads_an_entry_that_committed_after_a_later_one() {
    let Some(db) = TestDb::create() else { return };
    block_on(async {
        let pool = postgres::pool(&db.url, 3).unwrap();
        postgres::migrate(&pool).await.unwrap();
        let mut held = pool.get().await.unwrap();
        let mut reader = pool.get().await.unwrap();
        let start = keys::key_feed_horizon(&reader).await.unwrap();

        // The first change takes the lower id and stays uncommitted.
        let slow = held.transaction().await.unwrap();
        keys::publish_change(&slow, &[1; 32], 0).await.unwrap();
        // A second change takes the next id and commits at once.
        let writer = pool.get().await.unwrap();
        keys::publish_change(&writer, &[2; 32], 0).await.unwrap();
        let ids = |read: &gatehouse::store::keys::FeedRead| -> Vec<u8> {
            read.entries.iter().map(|e| e.key_hash.0[0]).collect()
        };

        let first = keys::read_key_changes(&mut reader, start).await.unwrap();
        assert_eq!(ids(&first), [2], "only the committed change is visible");
        let slow_id: i64 = slow
            .query_one(
                "SELECT id FROM key_changes WHERE key_hash = $1",
                &[&&[1u8; 32][..]],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            slow_id < first.entries[0].id,
            "the held change took the lower id"
        );

        // A reader's cursor: the first read applied the committed change.
        let mut cursor = FeedCursor::new(FeedHorizon(start));
        let applied = |hashes: Vec<KeyHash>| -> Vec<u8> { hashes.iter().map(|h| h.0[0]).collect() };
        assert_eq!(applied(cursor.take_new(first)), [2]);

        slow.commit().await.unwrap();
        let second = keys::read_key_changes(&mut reader, cursor.horizon().0)
            .await
            .unwrap();
        assert!(
            ids(&second).contains(&1),
            "the change that committed last is read: {second:?}"
        );
        assert_eq!(
            applied(cursor.take_new(second)),
            [1],
            "and only it is new to the reader"
        );
        let third = keys::read_key_changes(&mut reader, cursor.horizon().0)
            .await
            .unwrap();
        assert!(applied(cursor.take_new(third)).is_empty());
    });
}
