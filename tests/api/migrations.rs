//! Upgrades: migrations applied to a database that already holds data.

use sea_orm::{ConnectionTrait, Database, Statement};
use warden_migrations::{Migrator, MigratorTrait};

use crate::helpers::TestDatabase;

/// The per-status totals that ListUsers reads start from the users that
/// were there before the upgrade, not from zero.
#[tokio::test]
async fn the_user_counts_migration_counts_the_users_already_there() {
    let database = TestDatabase::create().await;
    let db = Database::connect(database.url()).await.unwrap();
    // The schema as it was before the counts existed.
    Migrator::up(&db, Some(2)).await.unwrap();
    for (i, status) in ["pending", "approved", "approved", "disabled", "approved"]
        .iter()
        .enumerate()
    {
        db.execute_unprepared(&format!(
            "INSERT INTO users (id, email, display_name, password_hash, is_admin, status, \
             created_at, updated_at) VALUES ('{}', 'u{i}@example.com', '', 'x', FALSE, \
             '{status}', '2026-11-01 10:00:00+00:00', '2026-11-01 10:00:00+00:00')",
            uuid::Uuid::new_v4()
        ))
        .await
        .unwrap();
    }
    Migrator::up(&db, None).await.unwrap();
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT status, total FROM user_counts ORDER BY status",
        ))
        .await
        .unwrap();
    let totals: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get::<String>("", "status").unwrap(),
                r.try_get::<i64>("", "total").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        totals,
        [
            ("approved".to_owned(), 3),
            ("disabled".to_owned(), 1),
            ("pending".to_owned(), 1)
        ]
    );
    db.close().await.unwrap();
}

/// Upgrading to organisations on a database made by the previous release:
/// every user gets their own organisation, named as Register names one,
/// with them as OWNER; nothing else changes.
#[tokio::test]
async fn the_organizations_migration_gives_every_existing_user_an_organisation_as_owner() {
    let database = TestDatabase::create().await;
    let db = Database::connect(database.url()).await.unwrap();
    // The previous release's schema.
    Migrator::up(&db, Some(5)).await.unwrap();
    let users = [
        ("ada@example.com", "Ada Lovelace", "Ada Lovelace"),
        ("bob.b@example.com", "", "bob.b"),
        ("carol@example.com", "   ", "carol"),
    ];
    let mut ids = Vec::new();
    for (i, (email, name, _)) in users.iter().enumerate() {
        let id = uuid::Uuid::new_v4();
        ids.push(id);
        db.execute_unprepared(&format!(
            "INSERT INTO users (id, email, display_name, password_hash, is_admin, status, \
             created_at, updated_at) VALUES ('{id}', '{email}', '{name}', 'x', FALSE, \
             'approved', '2026-11-0{} 10:00:00+00:00', '2026-11-01 10:00:00+00:00')",
            i + 1
        ))
        .await
        .unwrap();
    }
    db.execute_unprepared(&format!(
        "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at) VALUES \
         ('{}', '{}', '2026-11-01 10:00:00+00:00', '2026-11-01 10:00:00+00:00', \
         '2026-12-01 10:00:00+00:00')",
        uuid::Uuid::new_v4(),
        ids[0]
    ))
    .await
    .unwrap();
    let before = users_snapshot(&db).await;

    Migrator::up(&db, None).await.unwrap();
    let backend = db.get_database_backend();
    let rows = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT u.email, o.name, m.role, m.roles FROM users u \
             JOIN memberships m ON m.user_id = u.id \
             JOIN organizations o ON o.id = m.organization_id ORDER BY u.email",
        ))
        .await
        .unwrap();
    let got: Vec<(String, String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "email").unwrap(),
                r.try_get("", "name").unwrap(),
                r.try_get("", "role").unwrap(),
                r.try_get("", "roles").unwrap(),
            )
        })
        .collect();
    let wanted: Vec<(String, String, String, String)> = users
        .iter()
        .map(|(email, _, org)| {
            (
                (*email).to_owned(),
                (*org).to_owned(),
                "owner".to_owned(),
                String::new(),
            )
        })
        .collect();
    assert_eq!(got, wanted);
    assert_eq!(
        crate::helpers::count(&db, "SELECT COUNT(*) FROM organizations").await,
        3
    );
    assert_eq!(
        crate::helpers::count(
            &db,
            "SELECT COUNT(*) FROM organizations WHERE member_count = 1"
        )
        .await,
        3,
        "each counts its one member"
    );
    assert_eq!(
        crate::helpers::count(
            &db,
            "SELECT COUNT(*) FROM sessions WHERE organization_id IS NULL"
        )
        .await,
        1,
        "existing sessions act for no organisation"
    );
    assert_eq!(
        users_snapshot(&db).await,
        before,
        "the users are as they were"
    );
    // Running it again (another replica) changes nothing.
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(
        crate::helpers::count(&db, "SELECT COUNT(*) FROM memberships").await,
        3
    );
    db.close().await.unwrap();
}

async fn users_snapshot(db: &sea_orm::DatabaseConnection) -> Vec<(String, String, bool, String)> {
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT email, display_name, is_admin, status FROM users ORDER BY email",
        ))
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            (
                r.try_get("", "email").unwrap(),
                r.try_get("", "display_name").unwrap(),
                r.try_get("", "is_admin").unwrap(),
                r.try_get("", "status").unwrap(),
            )
        })
        .collect()
}
