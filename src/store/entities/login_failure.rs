use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "login_failures")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub email_hash: Vec<u8>,
    /// Failures (attempts that took a place) in the current round.
    pub failures: i32,
    /// Failures in a row since the last success, over every round.
    pub streak: i32,
    /// Lockouts the streak has had.
    pub lockouts: i32,
    pub last_failure_at: DateTimeUtc,
    pub locked_until: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
