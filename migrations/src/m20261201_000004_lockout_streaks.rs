//! Progressive lockout: besides the failures of the current round, each
//! email's row keeps the failures in a row since its last success (for the
//! NIST cap of 100) and how many lockouts that streak has had (each lasts
//! twice as long as the one before). Both start at zero, which is what a row
//! written by an older release means; old releases leave them alone.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        for (name, column) in [
            ("streak", LoginFailures::Streak),
            ("lockouts", LoginFailures::Lockouts),
        ] {
            if manager.has_column("login_failures", name).await? {
                continue;
            }
            manager
                .alter_table(
                    Table::alter()
                        .table(LoginFailures::Table)
                        .add_column(integer(column).default(0))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [LoginFailures::Streak, LoginFailures::Lockouts] {
            manager
                .alter_table(
                    Table::alter()
                        .table(LoginFailures::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum LoginFailures {
    Table,
    Streak,
    Lockouts,
}
