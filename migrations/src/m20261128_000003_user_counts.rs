//! ListUsers at scale: a (status, created_at, id) index, so that a page of
//! one status is read in order instead of sorted, and the number of users
//! per status kept up to date by triggers, so that `total_size` is one row
//! read instead of a count over the whole table (PostgreSQL counts 100,000
//! rows in about 7 ms).

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

use crate::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Every value the `users.status` check constraint allows.
const STATUSES: [&str; 3] = ["pending", "approved", "disabled"];

const POSTGRES_TRIGGERS: &str = r#"
CREATE FUNCTION warden_count_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        UPDATE user_counts SET total = total + 1 WHERE status = NEW.status;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE user_counts SET total = total - 1 WHERE status = OLD.status;
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER users_count_insert_delete AFTER INSERT OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION warden_count_users();
CREATE TRIGGER users_count_status AFTER UPDATE OF status ON users
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION warden_count_users();
"#;

const SQLITE_TRIGGERS: [&str; 3] = [
    "CREATE TRIGGER users_count_insert AFTER INSERT ON users BEGIN
        UPDATE user_counts SET total = total + 1 WHERE status = NEW.status;
    END",
    "CREATE TRIGGER users_count_delete AFTER DELETE ON users BEGIN
        UPDATE user_counts SET total = total - 1 WHERE status = OLD.status;
    END",
    "CREATE TRIGGER users_count_status AFTER UPDATE OF status ON users
        WHEN OLD.status <> NEW.status BEGIN
        UPDATE user_counts SET total = total - 1 WHERE status = OLD.status;
        UPDATE user_counts SET total = total + 1 WHERE status = NEW.status;
    END",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        index(
            manager,
            "idx_users_status_created_at_id",
            Users::Table,
            [Users::Status, Users::CreatedAt, Users::Id],
        )
        .await?;
        // The new index leads with status: the old one only slowed writes.
        manager
            .drop_index(
                Index::drop()
                    .name("idx_users_status")
                    .table(Users::Table)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UserCounts::Table)
                    .col(string_len(UserCounts::Status, 16).primary_key())
                    .col(big_integer(UserCounts::Total))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        // Triggers first, counts second. On PostgreSQL the migration is one
        // transaction, and creating a trigger locks `users` against writes
        // until it commits: every user is then either counted below (its
        // insert committed first) or counted by the triggers (it waited).
        // Counting first would miss users that replicas still on the old
        // version write between the count and the triggers. SQLite
        // migrates holding the write lock.
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(POSTGRES_TRIGGERS).await?;
            }
            _ => {
                for trigger in SQLITE_TRIGGERS {
                    db.execute_unprepared(trigger).await?;
                }
            }
        }
        for status in STATUSES {
            db.execute_unprepared(&format!(
                "INSERT INTO user_counts (status, total) \
                 SELECT '{status}', COUNT(*) FROM users WHERE status = '{status}'"
            ))
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DbBackend::Postgres => {
                db.execute_unprepared(
                    "DROP TRIGGER IF EXISTS users_count_status ON users; \
                     DROP TRIGGER IF EXISTS users_count_insert_delete ON users; \
                     DROP FUNCTION IF EXISTS warden_count_users()",
                )
                .await?;
            }
            _ => {
                for name in [
                    "users_count_insert",
                    "users_count_delete",
                    "users_count_status",
                ] {
                    db.execute_unprepared(&format!("DROP TRIGGER IF EXISTS {name}"))
                        .await?;
                }
            }
        }
        manager
            .drop_table(
                Table::drop()
                    .table(UserCounts::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        index(manager, "idx_users_status", Users::Table, [Users::Status]).await?;
        manager
            .drop_index(
                Index::drop()
                    .name("idx_users_status_created_at_id")
                    .table(Users::Table)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Status,
    CreatedAt,
}

#[derive(DeriveIden)]
enum UserCounts {
    Table,
    Status,
    Total,
}
