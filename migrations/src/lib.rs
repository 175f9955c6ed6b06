//! The schema of warden, as sea-orm migrations: its only source.

pub use sea_orm_migration::prelude::*;

mod m20261122_000001_initial;
mod m20261122_000002_login_failures;
mod m20261128_000003_user_counts;
mod m20261201_000004_lockout_streaks;
mod m20261201_000005_signing_key_retire_after;
mod m20261201_000006_organizations;
mod m20261201_000007_email;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261122_000001_initial::Migration),
            Box::new(m20261122_000002_login_failures::Migration),
            Box::new(m20261128_000003_user_counts::Migration),
            Box::new(m20261201_000004_lockout_streaks::Migration),
            Box::new(m20261201_000005_signing_key_retire_after::Migration),
            Box::new(m20261201_000006_organizations::Migration),
            Box::new(m20261201_000007_email::Migration),
        ]
    }
}

/// Creates an index (if missing) on `columns` of `table`.
pub(crate) async fn index<const N: usize>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: impl IntoIden,
    columns: [impl IntoIden; N],
) -> Result<(), DbErr> {
    let mut index = Index::create();
    index.if_not_exists().name(name).table(table);
    for column in columns {
        index.col(column);
    }
    manager.create_index(index.to_owned()).await
}
