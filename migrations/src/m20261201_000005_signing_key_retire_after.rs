//! When a replaced signing key may be deleted, stored with the key, so that
//! every replica deletes it at the same time whatever its own settings
//! (`WARDEN_KEY_RELOAD_INTERVAL`, `WARDEN_ACCESS_TOKEN_TTL`). Nullable and
//! without a default: releases that do not know the column keep reading
//! and inserting keys during a rolling upgrade (their keys get it set by
//! the newer replicas once they are replaced).
//!
//! And `signing_replicas`: each running replica says how soon after a key
//! is committed it signs with it (its `WARDEN_KEY_RELOAD_INTERVAL` and the
//! time a reload may take), so that the retire-after time covers the
//! slowest replica, whatever each is set to.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("signing_keys", "retire_after").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(SigningKeys::Table)
                        .add_column(timestamp_with_time_zone_null(SigningKeys::RetireAfter))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(SigningReplicas::Table)
                    .if_not_exists()
                    .col(uuid(SigningReplicas::ReplicaId).primary_key())
                    .col(big_integer(SigningReplicas::SwitchWithinMs))
                    .col(timestamp_with_time_zone(SigningReplicas::SeenAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(SigningReplicas::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await?;
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

#[derive(DeriveIden)]
enum SigningReplicas {
    Table,
    ReplicaId,
    SwitchWithinMs,
    SeenAt,
}
