//! What the tests of every part share: `on_both!`, which runs a case on SQLite (in memory) and
//! on PostgreSQL (in a schema of its own), and the fixtures they build on. The test of
//! [`Storage::open`] itself is here too.

use sqlx::AnyConnection;
use uuid::Uuid;

use crate::{
    Backend, Call, CallStatus, NewAgent, NewCall, NewTrunk, Storage, TrunkSecurity, TrunkTransport,
};

/// The organisation the tests' resources belong to.
pub(crate) async fn org(s: &Storage) -> Uuid {
    s.bootstrap_operator_key("test-admin-key").await.unwrap().id
}

/// PostgreSQL for the tests (`dialtone_test_support::postgres_test_url`), in a schema of its
/// own; `None`, saying why, where none answers (outside CI).
pub(crate) async fn postgres() -> Option<(Storage, String)> {
    let (url, schema) = postgres_schema().await?;
    let storage = Storage::open(&url).await.unwrap();
    assert_eq!(storage.backend(), Backend::Postgres);
    Some((storage, schema))
}

/// A new, empty schema in the test PostgreSQL: the URL that works in it, and its name.
pub(crate) async fn postgres_schema() -> Option<(String, String)> {
    use sqlx::Connection;
    let base = dialtone_test_support::postgres_test_url()?;
    sqlx::any::install_default_drivers();
    let mut admin = AnyConnection::connect(&base).await.unwrap();
    let schema = format!("dialtone_test_{}", Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if base.contains('?') { '&' } else { '?' };
    Some((
        format!("{base}{sep}options=-c%20search_path%3D{schema}"),
        schema,
    ))
}

/// Drops a test's schema (a failed test leaves its schema behind to look at).
pub(crate) async fn drop_schema(storage: &Storage, schema: &str) {
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&storage.pool)
        .await
        .unwrap();
}

/// Runs a storage test on SQLite (in memory) and on PostgreSQL.
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name($crate::Storage::open("sqlite::memory:").await.unwrap()).await;
            }

            #[tokio::test]
            async fn postgres() {
                if let Some((storage, schema)) = $crate::tests::postgres().await {
                    super::$name(storage.clone()).await;
                    $crate::tests::drop_schema(&storage, &schema).await;
                }
            }
        }
    };
}

pub(crate) use on_both;

pub(crate) fn trunk(name: &str) -> NewTrunk {
    NewTrunk {
        name: name.into(),
        host: "127.0.0.1".into(),
        port: 5060,
        transport: TrunkTransport::Udp,
        username: Some("u".into()),
        password: Some("secret".into()),
        realm: None,
        from_domain: None,
        max_concurrent_calls: Some(10),
        max_calls_per_second: None,
        register: false,
        security: TrunkSecurity::default(),
        codecs: None,
    }
}

/// A new call of `first`'s agent, number and trunk, to `to`, with `webhook_url`.
pub(crate) fn another(first: &Call, to: &str, webhook_url: Option<&str>) -> NewCall {
    NewCall {
        org_id: first.org_id,
        direction: crate::Direction::Outbound,
        agent_id: first.agent_id,
        to: to.into(),
        from_number: first.from_number.clone(),
        trunk_id: first.trunk_id,
        instructions: None,
        context: serde_json::json!({}),
        metadata: serde_json::json!({}),
        webhook_url: webhook_url.map(str::to_owned),
    }
}

pub(crate) async fn call(s: &Storage) -> Call {
    let t = s.create_trunk(org(s).await, trunk("t")).await.unwrap();
    let n = s
        .create_number(org(s).await, "+15550001111", t.id)
        .await
        .unwrap();
    let a = s
        .create_agent(
            org(s).await,
            NewAgent {
                name: "a".into(),
                config: dialtone_model::AgentFields {
                    instructions: Some("hi".into()),
                    ..dialtone_model::AgentFields::default()
                },
                number_ids: vec![n.id],
                primary_number_id: Some(n.id),
            },
        )
        .await
        .unwrap();
    s.insert_call(NewCall {
        org_id: org(s).await,
        direction: crate::Direction::Outbound,
        agent_id: a.id,
        to: "+15551230000".into(),
        from_number: n.e164.clone(),
        trunk_id: t.id,
        instructions: Some("hi".into()),
        context: serde_json::json!({"k": 1}),
        metadata: serde_json::json!({}),
        webhook_url: None,
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn file_database_survives_reopen() {
    let dir = std::env::temp_dir().join(format!("dialtone-storage-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("d.db").display());
    let id = {
        let s = Storage::open(&url).await.unwrap();
        call(&s).await.id
    };
    let s = Storage::open(&url).await.unwrap();
    assert_eq!(s.get_call(id).await.unwrap().status, CallStatus::Queued);
    let _ = std::fs::remove_dir_all(dir);
}

/// Ends call `c` at `ended` (Unix ms), completed, with a recording record naming store id `id`.
pub(crate) async fn end_recorded(s: &Storage, c: &Call, ended: i64, id: &str) {
    let progress = crate::CallProgress {
        at: Some(ended),
        recording: Some(serde_json::json!({"id": id, "url": "u", "format": "wav",
            "channels": "stereo", "duration_ms": 0, "bytes": 4, "sha256": "00"})),
        ..crate::CallProgress::default()
    };
    s.advance_call(c.id, CallStatus::Completed, progress)
        .await
        .unwrap();
}

/// Two calls ended with a recording each in `store` (one at 1 s, one at 5 s), then two retention
/// runs for what ended before 2 s racing, as two nodes' would. Answers the old call, the new one
/// and what each run did.
pub(crate) async fn purge_race(
    s: &Storage,
    store: &dyn crate::RecordingStore,
) -> (Call, Call, [crate::Purged; 2]) {
    let staging = tempfile::tempdir().unwrap();
    let old = call(s).await;
    let new = s
        .insert_call(another(&old, "+15550000298", None))
        .await
        .unwrap();
    for (c, ended) in [(&old, 1_000), (&new, 5_000)] {
        let id = format!("{}.wav", c.id);
        let staged = staging.path().join(&id);
        std::fs::write(&staged, b"RIFF").unwrap();
        store.put(&id, &staged).await.unwrap();
        end_recorded(s, c, ended, &id).await;
    }
    let (a, b) = tokio::join!(
        s.purge_recordings(store, 2_000),
        s.purge_recordings(store, 2_000)
    );
    (old, new, [a.unwrap(), b.unwrap()])
}
