//! Email (API.md, "Email: verification, password reset, invitations"):
//! whether each account's address is verified; the one-time tokens mailed
//! (or handed to a backend) for verification and password reset, stored only
//! as SHA-256; and the transactional outbox the mail sender drains.
//!
//! Existing accounts start unverified: nobody has proved their address yet.

use sea_orm_migration::{prelude::*, schema::*};

use crate::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite adds one at a time.
        if !manager.has_column("users", "email_verified").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(boolean(Users::EmailVerified).default(false))
                        .to_owned(),
                )
                .await?;
        }
        if !manager.has_column("users", "email_verified_at").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(timestamp_with_time_zone_null(Users::EmailVerifiedAt))
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(EmailTokens::Table)
                    .if_not_exists()
                    .col(binary(EmailTokens::TokenHash).primary_key())
                    .col(string_len(EmailTokens::Purpose, 16).check(
                        Expr::col(EmailTokens::Purpose).is_in(["verify_email", "reset_password"]),
                    ))
                    .col(uuid(EmailTokens::UserId))
                    // The address the token was sent to: it is dead once the
                    // account's address is another.
                    .col(string_len(EmailTokens::Email, 254))
                    // Whether it went out by mail (the cooldown counts those)
                    // or was handed to a backend by IssueEmailToken.
                    .col(boolean(EmailTokens::Mailed).default(true))
                    .col(timestamp_with_time_zone(EmailTokens::CreatedAt))
                    .col(timestamp_with_time_zone(EmailTokens::ExpiresAt))
                    // Set once: when it was used, or killed by a newer one.
                    .col(timestamp_with_time_zone_null(EmailTokens::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_email_tokens_user")
                            .from(EmailTokens::Table, EmailTokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // A user's tokens of one purpose: killing older ones, the cooldown.
        index(
            manager,
            "idx_email_tokens_user_purpose",
            EmailTokens::Table,
            [EmailTokens::UserId, EmailTokens::Purpose],
        )
        .await?;
        index(
            manager,
            "idx_email_tokens_expires_at",
            EmailTokens::Table,
            [EmailTokens::ExpiresAt],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(MailOutbox::Table)
                    .if_not_exists()
                    .col(uuid(MailOutbox::Id).primary_key())
                    .col(string_len(MailOutbox::Kind, 32))
                    .col(string_len(MailOutbox::Recipient, 254))
                    .col(string_len(MailOutbox::RecipientName, 100).default(""))
                    .col(text(MailOutbox::Subject))
                    // Holds the token of a token mail until it is delivered.
                    .col(text(MailOutbox::Body))
                    .col(timestamp_with_time_zone(MailOutbox::CreatedAt))
                    // When the next attempt is due.
                    .col(timestamp_with_time_zone(MailOutbox::DueAt))
                    .col(integer(MailOutbox::Attempts).default(0))
                    // A sender that claimed the row holds it until then; past
                    // it (the sender died), another may claim it.
                    .col(uuid_null(MailOutbox::LeaseId))
                    .col(timestamp_with_time_zone_null(MailOutbox::LeaseUntil))
                    .col(text_null(MailOutbox::LastError))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_mail_outbox_due_at",
            MailOutbox::Table,
            [MailOutbox::DueAt],
        )
        .await?;
        index(
            manager,
            "idx_mail_outbox_lease_id",
            MailOutbox::Table,
            [MailOutbox::LeaseId],
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(MailOutbox::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(EmailTokens::Table).to_owned())
            .await?;
        for column in [Users::EmailVerifiedAt, Users::EmailVerified] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Id,
    EmailVerified,
    EmailVerifiedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum EmailTokens {
    Table,
    TokenHash,
    Purpose,
    UserId,
    Email,
    Mailed,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum MailOutbox {
    Table,
    Id,
    Kind,
    Recipient,
    RecipientName,
    Subject,
    Body,
    CreatedAt,
    DueAt,
    Attempts,
    LeaseId,
    LeaseUntil,
    LastError,
}
