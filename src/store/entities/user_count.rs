use sea_orm::entity::prelude::*;

use super::user::Status;

/// How many users have each status, kept by triggers on `users`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "user_counts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub status: Status,
    pub total: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
