//! When a replaced signing key may be deleted, stored with the key, so that
//! every replica deletes it at the same time whatever its own settings
//! (`WARDEN_KEY_RELOAD_INTERVAL`, `WARDEN_ACCESS_TOKEN_TTL`). Nullable and
//! without a default: releases that do not know the column keep reading
//! and inserting keys during a rolling upgrade (their keys get it set by
//! the newer replicas once they are replaced).

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .add_column(timestamp_with_time_zone_null(SigningKeys::RetireAfter))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(SigningKeys::Table)
                    .drop_column(SigningKeys::RetireAfter)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SigningKeys {
    Table,
    RetireAfter,
}
