use sea_orm::entity::prelude::*;

/// A running replica and how soon after a signing key is committed it signs
/// with it: what the retire-after time of a replaced key must cover.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "signing_replicas")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub replica_id: Uuid,
    pub switch_within_ms: i64,
    pub seen_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
