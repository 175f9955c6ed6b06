//! What a scenario needs before it starts: an admin, approved users, and
//! sessions. The admin is registered through the API (the first account is
//! the admin). Further users go straight into the database with one
//! precomputed argon2id hash, since registering 100,000 users through the
//! API would hash 100,000 times (over 20 minutes on two cores); without
//! database access they are registered and approved through the API.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use argon2::{Algorithm, Argon2, PasswordHasher as _, Version};
use chrono::{Duration as ChronoDuration, Utc};
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, IntoActiveModel as _, QueryFilter as _,
    TransactionTrait as _,
    sea_query::{Expr, ExprTrait as _},
};
use tokio::task::JoinSet;
use tonic::{
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use uuid::Uuid;
use warden::{
    proto::v1::{
        RegisterRequest, UpdateUserRequest, UserStatus, auth_client::AuthClient,
        user_admin_client::UserAdminClient,
    },
    store::entities::{membership, organization, user},
};

use crate::{
    ceiling::Argon2Cost,
    client::bearer,
    scenario::{device, login_request},
};

/// The password of every seeded account: long enough for the default
/// policy, not on the block-list, unrelated to the emails.
pub const PASSWORD: &str = "loadgen passphrase for benchmark accounts";

/// Rows per INSERT statement (10 columns each: well under the bind-parameter
/// limits of SQLite and PostgreSQL).
const INSERT_BATCH: usize = 1_000;
/// Rows per transaction.
const TRANSACTION_ROWS: usize = 10_000;

#[derive(Clone)]
pub struct Tokens {
    pub email: String,
    pub access: String,
    pub refresh: String,
}

pub struct Seeded {
    pub admin_auth: MetadataValue<Ascii>,
    /// The admin's own organisation (made at registration); users seeded
    /// straight into the database are its members.
    pub admin_org: String,
    /// Emails of approved users, whose password is `PASSWORD`.
    pub users: Vec<String>,
    /// One session per entry, of `users` in order.
    pub sessions: Vec<Tokens>,
    /// How the users got there, for the report.
    pub note: String,
}

impl Seeded {
    /// Nothing seeded (the echo server has no accounts).
    pub fn none() -> Self {
        Self {
            admin_auth: MetadataValue::from_static(""),
            admin_org: String::new(),
            users: Vec::new(),
            sessions: Vec::new(),
            note: String::new(),
        }
    }
}

/// How to reach the admin account.
#[derive(Clone)]
pub struct AdminLogin {
    pub email: String,
    pub password: String,
}

pub struct Plan<'a> {
    pub users: usize,
    pub sessions: usize,
    /// Distinguishes this seeding's emails from any other on the same server.
    pub tag: &'a str,
    /// The server's database, for direct inserts.
    pub database_url: Option<&'a str>,
    pub cost: Argon2Cost,
}

/// Registers the admin on a fresh server (the first account is the admin).
pub async fn register_admin(channel: &Channel, tag: &str) -> Result<AdminLogin> {
    let email = format!("admin.{tag}@loadgen.test");
    let user = AuthClient::new(channel.clone())
        .register(RegisterRequest {
            organization_name: None,
            invitation_token: String::new(),
            email: email.clone(),
            password: PASSWORD.to_owned(),
            display_name: "loadgen admin".into(),
        })
        .await
        .context("registering the admin")?
        .into_inner()
        .user
        .context("Register answered no user")?;
    if !user.is_admin {
        bail!(
            "the server already has accounts, so a new one is no admin: \
             pass --admin-email (and --admin-password or LOADGEN_ADMIN_PASSWORD)"
        );
    }
    Ok(AdminLogin {
        email,
        password: PASSWORD.to_owned(),
    })
}

pub async fn seed(channel: &Channel, admin: &AdminLogin, plan: &Plan<'_>) -> Result<Seeded> {
    let mut auth = AuthClient::new(channel.clone());
    let login = auth
        .login(warden::proto::v1::LoginRequest {
            organization_id: None,
            email: admin.email.clone(),
            password: admin.password.clone(),
            device: device(),
        })
        .await
        .context("the admin cannot log in")?
        .into_inner();
    let admin_tokens = login.tokens.context("Login answered no tokens")?;
    let admin_id = login.user.map(|u| u.id).unwrap_or_default();
    let admin_org = login
        .membership
        .and_then(|m| m.organization)
        .map(|o| o.id)
        .unwrap_or_default();
    let admin_auth = bearer(&admin_tokens.access_token)?;

    let emails: Vec<String> = (0..plan.users)
        .map(|i| format!("u{i}.{}@loadgen.test", plan.tag))
        .collect();
    let started = Instant::now();
    let note = match plan.database_url {
        Some(url) if !emails.is_empty() => {
            insert_users(url, &emails, &admin_id, &admin_org, plan.cost).await?;
            format!(
                "{} users inserted straight into the database with one precomputed argon2id \
                 hash (m={}, t={}, p={}), each a member of the admin's organisation, in {:.1} s",
                emails.len(),
                plan.cost.memory_kib,
                plan.cost.iterations,
                plan.cost.parallelism,
                started.elapsed().as_secs_f64()
            )
        }
        _ if !emails.is_empty() => {
            register_users(channel, &admin_auth, &emails).await?;
            format!(
                "{} users registered and approved through the API in {:.1} s",
                emails.len(),
                started.elapsed().as_secs_f64()
            )
        }
        _ => String::new(),
    };

    let sessions = login_all(channel, &emails[..plan.sessions.min(emails.len())]).await?;
    Ok(Seeded {
        admin_auth,
        admin_org,
        users: emails,
        sessions,
        note,
    })
}

/// One PHC string for every seeded user: the same password and parameters a
/// registration would store, hashed once.
pub fn precomputed_hash(cost: Argon2Cost) -> Result<String> {
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, cost.params()?);
    Ok(argon2
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?
        .to_string())
}

async fn insert_users(
    url: &str,
    emails: &[String],
    admin_id: &str,
    admin_org: &str,
    cost: Argon2Cost,
) -> Result<()> {
    let hash = tokio::task::spawn_blocking(move || precomputed_hash(cost)).await??;
    let approved_by = Uuid::parse_str(admin_id).ok();
    let organization = Uuid::parse_str(admin_org).ok();
    // Seeding 100,000 users takes longer than a server's statements may.
    let db = warden::store::connect(url, std::time::Duration::from_secs(60))
        .await
        .context("cannot open the server's database to seed users")?;
    // Distinct creation times, oldest first, all in the past: pages of the
    // newest-first listing walk a realistic spread of timestamps.
    let now = Utc::now();
    let oldest = now - ChronoDuration::milliseconds(emails.len() as i64 * 10 + 1_000);
    for (t, rows) in emails.chunks(TRANSACTION_ROWS).enumerate() {
        let txn = db.begin().await?;
        for (b, batch) in rows.chunks(INSERT_BATCH).enumerate() {
            let first = t * TRANSACTION_ROWS + b * INSERT_BATCH;
            let ids: Vec<Uuid> = batch.iter().map(|_| Uuid::new_v4()).collect();
            let created_at =
                |k: usize| oldest + ChronoDuration::milliseconds((first + k) as i64 * 10);
            let models = batch.iter().enumerate().map(|(k, email)| {
                let created = created_at(k);
                user::Model {
                    id: ids[k],
                    email: email.clone(),
                    display_name: format!("Load User {}", first + k),
                    password_hash: user::PasswordHash(hash.clone()),
                    is_admin: false,
                    status: user::Status::Approved,
                    created_at: created,
                    updated_at: created,
                    approved_at: Some(created),
                    approved_by,
                    email_verified: true,
                    email_verified_at: Some(created),
                }
                .into_active_model()
            });
            user::Entity::insert_many(models)
                .exec_without_returning(&txn)
                .await
                .context("inserting seeded users")?;
            // Members of the admin's organisation, as if invited: what
            // list-members pages through, and what their sessions act for.
            if let Some(organization_id) = organization {
                let members = ids.iter().enumerate().map(|(k, id)| {
                    membership::Model {
                        user_id: *id,
                        organization_id,
                        role: membership::Role::Member,
                        roles: String::new(),
                        joined_at: created_at(k),
                    }
                    .into_active_model()
                });
                membership::Entity::insert_many(members)
                    .exec_without_returning(&txn)
                    .await
                    .context("inserting seeded memberships")?;
                organization::Entity::update_many()
                    .col_expr(
                        organization::Column::MemberCount,
                        Expr::col(organization::Column::MemberCount).add(ids.len() as i64),
                    )
                    .filter(organization::Column::Id.eq(organization_id))
                    .exec(&txn)
                    .await
                    .context("counting seeded memberships")?;
            }
        }
        txn.commit().await?;
    }
    db.close().await?;
    Ok(())
}

/// Without database access: Register (PENDING), then approve as the admin.
async fn register_users(
    channel: &Channel,
    admin_auth: &MetadataValue<Ascii>,
    emails: &[String],
) -> Result<()> {
    let mut auth = AuthClient::new(channel.clone());
    let mut admin = UserAdminClient::new(channel.clone());
    for email in emails {
        let user = auth
            .register(RegisterRequest {
                organization_name: None,
                invitation_token: String::new(),
                email: email.clone(),
                password: PASSWORD.to_owned(),
                display_name: String::new(),
            })
            .await
            .with_context(|| format!("registering {email}"))?
            .into_inner()
            .user
            .context("Register answered no user")?;
        let mut request = tonic::Request::new(UpdateUserRequest {
            user_id: user.id,
            status: Some(UserStatus::Approved as i32),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert("authorization", admin_auth.clone());
        admin
            .update_user(request)
            .await
            .with_context(|| format!("approving {email}"))?;
    }
    Ok(())
}

/// A session for each email, a few logins at a time (each is an argon2id
/// verify on the server).
async fn login_all(channel: &Channel, emails: &[String]) -> Result<Vec<Tokens>> {
    let mut tasks = JoinSet::new();
    let mut next = 0;
    let mut sessions: Vec<Option<Tokens>> = vec![None; emails.len()];
    let parallel = 8;
    while next < emails.len() || !tasks.is_empty() {
        while next < emails.len() && tasks.len() < parallel {
            let mut auth = AuthClient::new(channel.clone());
            let email = emails[next].clone();
            let index = next;
            tasks.spawn(async move {
                let answer = auth.login(login_request(&email)).await;
                (index, email, answer)
            });
            next += 1;
        }
        if let Some(joined) = tasks.join_next().await {
            let (index, email, answer) = joined?;
            let tokens = answer
                .with_context(|| format!("seeding a session for {email}"))?
                .into_inner()
                .tokens
                .context("Login answered no tokens")?;
            sessions[index] = Some(Tokens {
                email,
                access: tokens.access_token,
                refresh: tokens.refresh_token,
            });
        }
    }
    Ok(sessions.into_iter().flatten().collect())
}
