//! Migrations and seeds on a real PostgreSQL.

use std::process::Command;

use codeops::dev::SEEDED_LOGINS;
use codeops::schema;
use sqlx::PgPool;

use crate::common::{PASSWORD, TestDb};

const CHECK_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/tools/check-schema");

/// Everything about `core` that a migration could change, one line per fact.
async fn schema_fingerprint(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        r#"
        SELECT format('column %s.%s %s(%s) null=%s default=%s', table_name, column_name, data_type,
                      character_maximum_length, is_nullable, column_default)
          FROM information_schema.columns WHERE table_schema = 'core'
        UNION ALL
        SELECT format('constraint %s %s %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
          FROM pg_constraint WHERE connamespace = 'core'::regnamespace
        UNION ALL
        SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'core'
        UNION ALL
        SELECT format('policy %s.%s %s %s to=%s using=%s check=%s', schemaname, tablename, policyname, cmd,
                      roles, qual, with_check)
          FROM pg_policies WHERE schemaname = 'core'
        UNION ALL
        SELECT format('rls %s enable=%s force=%s', relname, relrowsecurity, relforcerowsecurity)
          FROM pg_class WHERE relnamespace = 'core'::regnamespace AND relkind IN ('r', 'p')
        UNION ALL
        SELECT format('function %s', p.oid::regprocedure)
          FROM pg_proc p WHERE p.pronamespace = 'core'::regnamespace
        UNION ALL
        SELECT format('grant %s %s %s', table_name, grantee, privilege_type)
          FROM information_schema.role_table_grants WHERE table_schema = 'core'
        UNION ALL
        SELECT format('migration %s %s %s %s', version, success, encode(checksum, 'hex'), installed_on)
          FROM _sqlx_migrations
        UNION ALL
        SELECT format('migrations %s', count(*)) FROM _sqlx_migrations
        ORDER BY 1
        "#,
    )
    .fetch_all(pool)
    .await
    .expect("schema fingerprint")
}

/// Exact row count of every table in `core`.
async fn row_counts(pool: &PgPool) -> Vec<(String, i64)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'core' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("list core tables");
    assert!(!tables.is_empty(), "no tables in schema core");
    let mut counts = Vec::new();
    for table in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM core.\"{table}\""))
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("count core.{table}: {e}"));
        counts.push((table, n));
    }
    counts
}

fn total(counts: &[(String, i64)]) -> i64 {
    counts.iter().map(|(_, n)| n).sum()
}

#[tokio::test]
async fn migrations_produce_the_audited_schema() {
    let tool = std::path::Path::new(CHECK_SCHEMA);
    if !tool.exists() {
        if std::env::var("CODEOPS_SKIP_SCHEMA_AUDIT").as_deref() == Ok("1") {
            eprintln!(
                "skipping the schema audit: {CHECK_SCHEMA} not found and CODEOPS_SKIP_SCHEMA_AUDIT=1"
            );
            return;
        }
        panic!(
            "the schema audit tool {CHECK_SCHEMA} does not exist (shared/ must sit beside the workspace); \
             set CODEOPS_SKIP_SCHEMA_AUDIT=1 to skip this test"
        );
    }
    let db = TestDb::empty().await;
    schema::migrate(&db.url)
        .await
        .expect("migrate an empty database");

    let url = db.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3").arg(CHECK_SCHEMA).arg(url).output()
    })
    .await
    .expect("check-schema task")
    .expect("run check-schema (needs python3 and psql)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "check-schema exited with {}:\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(" 0 missing"),
        "check-schema did not report `0 missing`:\n{stdout}\n{stderr}"
    );
    assert!(
        !stdout.contains("MISSING:"),
        "check-schema reported missing items:\n{stdout}"
    );
}

#[tokio::test]
async fn migrating_twice_changes_nothing() {
    let db = TestDb::empty().await;
    schema::migrate(&db.url).await.expect("first migrate");
    let pool = db.admin_pool().await;
    let before = schema_fingerprint(&pool).await;
    assert!(
        before.iter().any(|l| l.starts_with("column users.email ")),
        "fingerprint does not see core.users: {before:#?}"
    );
    assert!(
        before.iter().any(|l| l.starts_with("policy ")),
        "no RLS policies in core"
    );
    let migrations = before
        .iter()
        .filter(|l| l.starts_with("migration "))
        .count();
    assert!(
        migrations >= 4,
        "expected the identity, planning and decision migrations, saw {migrations}"
    );

    schema::migrate(&db.url).await.expect("second migrate");
    let after = schema_fingerprint(&pool).await;
    assert_eq!(before, after, "the second migrate changed the schema");
    pool.close().await;
}

#[tokio::test]
async fn seeding_twice_inserts_nothing_the_second_time() {
    let db = TestDb::empty().await;
    schema::migrate(&db.url).await.expect("migrate");
    let pool = db.admin_pool().await;
    let migrated = row_counts(&pool).await;

    let first = schema::seed(&db.url).await.expect("first seed");
    let seeded = row_counts(&pool).await;
    assert!(first > 0, "the first seed inserted nothing");
    assert_eq!(
        first as i64,
        total(&seeded) - total(&migrated),
        "the first seed's reported row count differs from the rows that appeared"
    );

    let second = schema::seed(&db.url).await.expect("second seed");
    assert_eq!(second, 0, "the second seed inserted rows");
    let reseeded = row_counts(&pool).await;
    assert_eq!(seeded, reseeded, "row counts changed after the second seed");
    pool.close().await;
}

#[tokio::test]
async fn every_seeded_password_verifies_against_password123() {
    let db = TestDb::seeded().await;
    let pool = db.admin_pool().await;
    let users: Vec<(String, String)> =
        sqlx::query_as("SELECT email, password_hash FROM core.users ORDER BY email")
            .fetch_all(&pool)
            .await
            .expect("seeded users");
    assert_eq!(users.len(), SEEDED_LOGINS.len(), "seeded users: {users:?}");
    for (_, email, _) in SEEDED_LOGINS {
        assert!(
            users.iter().any(|(e, _)| e == email),
            "{email} is not seeded"
        );
    }
    for (email, hash) in users {
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(PASSWORD, &hash))
            .await
            .expect("bcrypt task")
            .unwrap_or_else(|e| panic!("stored hash of {email} is not a bcrypt hash: {e}"));
        assert!(
            ok,
            "the stored hash of {email} does not verify against {PASSWORD}"
        );
    }
    pool.close().await;
}

#[tokio::test]
async fn every_foreign_key_is_backed_by_an_index() {
    let db = TestDb::seeded().await;
    let pool = db.admin_pool().await;
    // A foreign key is covered when some index starts with its columns (in
    // any order): deletes and joins on the parent then need no scan.
    let uncovered: Vec<String> = sqlx::query_scalar(
        r#"
        SELECT format('%s %s', c.conrelid::regclass, c.conname)
          FROM pg_constraint c
         WHERE c.contype = 'f' AND c.connamespace = 'core'::regnamespace
           AND NOT EXISTS (
               SELECT 1 FROM pg_index i
                WHERE i.indrelid = c.conrelid
                  AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey
                  AND c.conkey @> (i.indkey::int2[])[0:cardinality(c.conkey) - 1])
         ORDER BY 1
        "#,
    )
    .fetch_all(&pool)
    .await
    .expect("foreign keys without an index");
    assert!(
        uncovered.is_empty(),
        "foreign keys without an index: {uncovered:?}"
    );
    pool.close().await;
}

#[tokio::test]
async fn every_tenant_table_forces_row_level_security() {
    let db = TestDb::seeded().await;
    let pool = db.admin_pool().await;
    let unprotected: Vec<String> = sqlx::query_scalar(
        r#"
        SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = 'core'::regnamespace AND c.relkind = 'r'
           AND c.relname <> 'permissions'
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
         ORDER BY 1
        "#,
    )
    .fetch_all(&pool)
    .await
    .expect("tables without forced RLS");
    assert!(
        unprotected.is_empty(),
        "tables without forced row-level security: {unprotected:?}"
    );
    pool.close().await;
}
