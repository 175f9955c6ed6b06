use sea_orm::entity::prelude::*;

/// A mail waiting to be delivered. The body of a token mail holds the
/// token, so the row goes as soon as the mail is delivered (or given up).
#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "mail_outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub kind: String,
    pub recipient: String,
    pub recipient_name: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTimeUtc,
    pub due_at: DateTimeUtc,
    pub attempts: i32,
    pub lease_id: Option<Uuid>,
    pub lease_until: Option<DateTimeUtc>,
    pub last_error: Option<String>,
}

/// Never the body: it may hold a token.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("mail_outbox::Model")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .field("due_at", &self.due_at)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
