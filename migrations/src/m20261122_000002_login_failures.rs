use sea_orm_migration::{prelude::*, schema::*};

use crate::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .if_not_exists()
                    // SHA-256 of the normalised email: bounded size, and no
                    // attacker-chosen text stored for addresses with no account.
                    .col(binary(LoginFailures::EmailHash).primary_key())
                    .col(integer(LoginFailures::Failures))
                    .col(timestamp_with_time_zone(LoginFailures::LastFailureAt))
                    .col(timestamp_with_time_zone_null(LoginFailures::LockedUntil))
                    .to_owned(),
            )
            .await?;
        // Expired entries are pruned by age.
        index(
            manager,
            "idx_login_failures_last_failure_at",
            LoginFailures::Table,
            [LoginFailures::LastFailureAt],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(LoginFailures::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    EmailHash,
    Failures,
    LastFailureAt,
    LockedUntil,
}
