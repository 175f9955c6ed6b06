//! Tenancy: organisations, memberships (an OrgRole and free application
//! roles per user and organisation), invitations (the token stored only as
//! its SHA-256), and the organisation a session acts for.
//!
//! Safe while older replicas still run: they never read the new tables, and
//! `sessions.organization_id` is nullable without a default, so their
//! inserts go on working (their sessions act for no organisation).
//!
//! Every user already there gets their own organisation, named as Register
//! names one (the display name, else the email's local part), with them as
//! OWNER. The backfill runs in bounded batches (`BATCH` users per
//! statement), and picks only users who have no membership yet, so a run
//! that was interrupted simply continues. A backfilled organisation takes
//! its owner's user id as its id: both are UUIDs of different tables, and it
//! lets the backfill be plain SQL on both databases (SQLite cannot make a
//! UUID).

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

use crate::index;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Users per backfill statement.
const BATCH: u32 = 1000;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .if_not_exists()
                    .col(uuid(Organizations::Id).primary_key())
                    .col(string_len(Organizations::Name, 100))
                    .col(timestamp_with_time_zone(Organizations::CreatedAt))
                    .col(timestamp_with_time_zone(Organizations::UpdatedAt))
                    // Its memberships, kept by the transactions that add or
                    // remove one: ListMembers' total_size without counting
                    // 100,000 index entries per page.
                    .col(big_integer(Organizations::MemberCount).default(0))
                    .to_owned(),
            )
            .await?;
        // ListOrganizations: newest first, ties by id (keyset pagination).
        index(
            manager,
            "idx_organizations_created_at_id",
            Organizations::Table,
            [Organizations::CreatedAt, Organizations::Id],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .if_not_exists()
                    .col(uuid(Memberships::UserId))
                    .col(uuid(Memberships::OrganizationId))
                    .col(
                        string_len(Memberships::Role, 16).check(
                            Expr::col(Memberships::Role).is_in(["member", "admin", "owner"]),
                        ),
                    )
                    // Application roles, sorted, separated by one space (a
                    // role never contains one).
                    .col(text(Memberships::Roles).default(""))
                    .col(timestamp_with_time_zone(Memberships::JoinedAt))
                    // One membership per user and organisation.
                    .primary_key(
                        Index::create()
                            .col(Memberships::UserId)
                            .col(Memberships::OrganizationId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_user")
                            .from(Memberships::Table, Memberships::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_memberships_organization")
                            .from(Memberships::Table, Memberships::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // ListMembers: an organisation's members, newest first, ties by
        // user id; a page of 100,000 members costs what a ListUsers page does.
        index(
            manager,
            "idx_memberships_organization_id_joined_at_user_id",
            Memberships::Table,
            [
                Memberships::OrganizationId,
                Memberships::JoinedAt,
                Memberships::UserId,
            ],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Invitations::Table)
                    .if_not_exists()
                    .col(uuid(Invitations::Id).primary_key())
                    .col(uuid(Invitations::OrganizationId))
                    .col(string_len(Invitations::Email, 254))
                    .col(
                        string_len(Invitations::Role, 16).check(
                            Expr::col(Invitations::Role).is_in(["member", "admin", "owner"]),
                        ),
                    )
                    .col(text(Invitations::Roles).default(""))
                    // SHA-256 of the token: the token itself is never stored.
                    .col(binary(Invitations::TokenHash).unique_key())
                    // No foreign key: the inviter's id stays as a record.
                    .col(uuid(Invitations::InvitedBy))
                    .col(timestamp_with_time_zone(Invitations::CreatedAt))
                    .col(timestamp_with_time_zone(Invitations::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Invitations::AcceptedAt))
                    .col(timestamp_with_time_zone_null(Invitations::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_invitations_organization")
                            .from(Invitations::Table, Invitations::OrganizationId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // An organisation's invitations, newest first; a pending one for an
        // email is replaced.
        index(
            manager,
            "idx_invitations_organization_id_email",
            Invitations::Table,
            [Invitations::OrganizationId, Invitations::Email],
        )
        .await?;

        if !manager.has_column("sessions", "organization_id").await? {
            // No foreign key: a session of a deleted organisation is revoked
            // by the deletion, and must not fall back to acting for none.
            manager
                .alter_table(
                    Table::alter()
                        .table(Sessions::Table)
                        .add_column(uuid_null(Sessions::OrganizationId))
                        .to_owned(),
                )
                .await?;
        }
        index(
            manager,
            "idx_sessions_organization_id",
            Sessions::Table,
            [Sessions::OrganizationId],
        )
        .await?;

        backfill(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Invitations::Table.into_iden(),
            Memberships::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("idx_sessions_organization_id")
                    .table(Sessions::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .drop_column(Sessions::OrganizationId)
                    .to_owned(),
            )
            .await
    }
}

/// Gives every user without a membership their own organisation, as OWNER,
/// `BATCH` users at a time.
async fn backfill(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = db.get_database_backend();
    // Register's fallback: the display name, else the email's local part.
    let local_part = match backend {
        DbBackend::Postgres => "split_part(u.email, '@', 1)",
        _ => "substr(u.email, 1, instr(u.email, '@') - 1)",
    };
    let name = format!(
        "substr(CASE WHEN trim(u.display_name) <> '' THEN trim(u.display_name) \
         ELSE {local_part} END, 1, 100)"
    );
    let organizations = format!(
        "INSERT INTO organizations (id, name, created_at, updated_at, member_count) \
         SELECT u.id, {name}, u.created_at, u.created_at, 1 FROM users u \
         WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id) \
         AND NOT EXISTS (SELECT 1 FROM organizations o WHERE o.id = u.id) \
         ORDER BY u.created_at, u.id LIMIT {BATCH}"
    );
    let memberships = format!(
        "INSERT INTO memberships (user_id, organization_id, role, roles, joined_at) \
         SELECT u.id, u.id, 'owner', '', u.created_at FROM users u \
         JOIN organizations o ON o.id = u.id \
         WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = u.id) \
         ORDER BY u.created_at, u.id LIMIT {BATCH}"
    );
    loop {
        let created = db.execute_unprepared(&organizations).await?.rows_affected();
        let joined = db.execute_unprepared(&memberships).await?.rows_affected();
        if created == 0 && joined == 0 {
            return Ok(());
        }
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    OrganizationId,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    CreatedAt,
    UpdatedAt,
    MemberCount,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    UserId,
    OrganizationId,
    Role,
    Roles,
    JoinedAt,
}

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    OrganizationId,
    Email,
    Role,
    Roles,
    TokenHash,
    InvitedBy,
    CreatedAt,
    ExpiresAt,
    AcceptedAt,
    RevokedAt,
}
