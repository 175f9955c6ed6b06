use sea_orm::entity::prelude::*;

/// An argon2id PHC string. Its own type so that `Debug` of a user row can
/// never put a hash into a log.
#[derive(Clone, PartialEq, Eq, DeriveValueType)]
pub struct PasswordHash(pub String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "String(StringLen::N(16))")]
pub enum Status {
    #[sea_orm(string_value = "pending")]
    Pending,
    #[sea_orm(string_value = "approved")]
    Approved,
    #[sea_orm(string_value = "disabled")]
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub email: String,
    pub display_name: String,
    pub password_hash: PasswordHash,
    pub is_admin: bool,
    pub status: Status,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub approved_at: Option<DateTimeUtc>,
    pub approved_by: Option<Uuid>,
    pub email_verified: bool,
    pub email_verified_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::session::Entity")]
    Session,
}

impl Related<super::session::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Session.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_of_a_user_row_hides_the_password_hash() {
        let now = chrono::Utc::now();
        let row = Model {
            id: Uuid::nil(),
            email: "a@b.c".into(),
            display_name: String::new(),
            password_hash: PasswordHash(
                "$argon2id$v=19$m=64,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
            ),
            is_admin: false,
            status: Status::Approved,
            created_at: now,
            updated_at: now,
            approved_at: None,
            approved_by: None,
            email_verified: false,
            email_verified_at: None,
        };
        let debug = format!("{row:?}");
        assert!(!debug.contains("argon2"), "{debug}");
        assert!(debug.contains("[redacted]"));
    }
}
