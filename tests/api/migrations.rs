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
