//! The scenarios: what one worker sends, call after call. Requests are built
//! once and cloned per call (a few short strings); bearer metadata is built
//! once and shared.

use anyhow::{Result, bail};
use clap::ValueEnum;
use tonic::{
    Request,
    metadata::{Ascii, MetadataValue},
    transport::Channel,
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use warden::proto::v1::{
    DeviceInfo, GetMeRequest, ListMembersRequest, ListUsersRequest, LoginRequest, RefreshRequest,
    RegisterRequest, ValidateTokenRequest, auth_client::AuthClient,
    organizations_client::OrganizationsClient, user_admin_client::UserAdminClient,
};

use crate::{
    client::{Failure, bearer},
    seed::{PASSWORD, Seeded, Tokens},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Login with the right password (one argon2id verify each).
    Login,
    /// Register a new account (one argon2id hash each).
    Register,
    /// Refresh: each worker keeps its own session and rotates its token.
    Refresh,
    /// GetMe with a valid access token.
    Getme,
    /// ValidateToken with a valid access token.
    Validate,
    /// Admin ListUsers, 50 a page, following next_page_token and starting over.
    ListUsers,
    /// ListMembers of the admin's organisation (every seeded user is a
    /// member), 50 a page, following next_page_token and starting over.
    ListMembers,
    /// A blend: 70 % validate, 17 % getme, 8 % refresh, 2 % login, 2 %
    /// list-users, 1 % register.
    Mixed,
    /// grpc.health.v1 Health/Check against the bare echo server (the ceiling).
    Echo,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Register => "register",
            Self::Refresh => "refresh",
            Self::Getme => "getme",
            Self::Validate => "validate",
            Self::ListUsers => "list-users",
            Self::ListMembers => "list-members",
            Self::Mixed => "mixed",
            Self::Echo => "echo",
        }
    }

    /// The operations it reports latencies for.
    pub fn ops(self) -> &'static [&'static str] {
        match self {
            Self::Mixed => MIXED_OPS,
            Self::Login => &["login"],
            Self::Register => &["register"],
            Self::Refresh => &["refresh"],
            Self::Getme => &["getme"],
            Self::Validate => &["validate"],
            Self::ListUsers => &["list-users"],
            Self::ListMembers => &["list-members"],
            Self::Echo => &["health-check"],
        }
    }

    /// Whether the scenario hashes passwords (its ceiling is argon2's, not the
    /// echo server's).
    pub fn hashes(self) -> bool {
        matches!(self, Self::Login | Self::Register)
    }
}

/// Operations of `mixed`, in the order of `MIXED_WEIGHTS`.
pub const MIXED_OPS: &[&str] = &[
    "validate",
    "getme",
    "refresh",
    "login",
    "list-users",
    "register",
];
/// Percentages of `mixed`. Token checks dominate real traffic (every
/// backend request of every signed-in user), profile reads come next, a
/// session refreshes every few minutes (access tokens live 15), an admin
/// page now and then. Logins and registrations are rare in real traffic;
/// they are kept at 3 % together so that every path is exercised while the
/// blend does not turn into an argon2 benchmark: each costs about 25 ms of
/// a core, 150 times a token check, so even 3 % is most of the CPU.
pub const MIXED_WEIGHTS: [u32; 6] = [70, 17, 8, 2, 2, 1];

/// "70 % validate, 17 % getme, …".
pub fn mixed_description() -> String {
    MIXED_OPS
        .iter()
        .zip(MIXED_WEIGHTS)
        .map(|(op, w)| format!("{w} % {op}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The operation a draw in `0..100` picks.
pub fn mixed_pick(draw: u32) -> usize {
    let mut upto = 0;
    for (i, w) in MIXED_WEIGHTS.iter().enumerate() {
        upto += w;
        if draw < upto {
            return i;
        }
    }
    MIXED_WEIGHTS.len() - 1
}

pub fn device() -> Option<DeviceInfo> {
    Some(DeviceInfo {
        device_id: String::new(),
        device_name: "warden-loadgen".into(),
        device_type: "service".into(),
    })
}

pub fn login_request(email: &str) -> LoginRequest {
    LoginRequest {
        organization_id: None,
        email: email.to_owned(),
        password: PASSWORD.to_owned(),
        device: device(),
    }
}

/// One closed-loop worker: one call in flight at a time.
pub enum Worker {
    Echo {
        client: HealthClient<Channel>,
        request: HealthCheckRequest,
    },
    Login {
        client: AuthClient<Channel>,
        request: LoginRequest,
    },
    Register {
        client: AuthClient<Channel>,
        prefix: String,
        n: u64,
    },
    Refresh {
        client: AuthClient<Channel>,
        refresh_token: String,
        relogin: LoginRequest,
        lost: bool,
    },
    GetMe {
        client: AuthClient<Channel>,
        auth: MetadataValue<Ascii>,
    },
    Validate {
        client: AuthClient<Channel>,
        request: ValidateTokenRequest,
    },
    ListUsers {
        client: UserAdminClient<Channel>,
        auth: MetadataValue<Ascii>,
        page_token: String,
    },
    ListMembers {
        client: OrganizationsClient<Channel>,
        auth: MetadataValue<Ascii>,
        organization_id: String,
        page_token: String,
    },
    Mixed(Box<Mixed>),
}

pub struct Mixed {
    auth: AuthClient<Channel>,
    admin: UserAdminClient<Channel>,
    admin_auth: MetadataValue<Ascii>,
    access: MetadataValue<Ascii>,
    validate: ValidateTokenRequest,
    refresh_token: String,
    login: LoginRequest,
    lost: bool,
    page_token: String,
    register_prefix: String,
    registered: u64,
    rng: u64,
}

/// Where the workers of a scenario get what they need.
pub struct Build<'a> {
    pub channels: &'a [Channel],
    pub seeded: &'a Seeded,
    /// Unique per run and server, so registrations never collide.
    pub tag: &'a str,
}

pub fn workers(scenario: Scenario, concurrency: usize, build: &Build<'_>) -> Result<Vec<Worker>> {
    if build.channels.is_empty() {
        bail!("no connection to the server");
    }
    (0..concurrency)
        .map(|i| worker(scenario, i, build))
        .collect()
}

fn worker(scenario: Scenario, i: usize, build: &Build<'_>) -> Result<Worker> {
    let channel = build.channels[i % build.channels.len()].clone();
    let seeded = build.seeded;
    let session = |i: usize| -> Result<&Tokens> {
        if seeded.sessions.is_empty() {
            bail!("the scenario needs sessions and none were seeded");
        }
        Ok(&seeded.sessions[i % seeded.sessions.len()])
    };
    let user = |i: usize| -> Result<&str> {
        if seeded.users.is_empty() {
            bail!("the scenario needs users and none were seeded");
        }
        Ok(seeded.users[i % seeded.users.len()].as_str())
    };
    Ok(match scenario {
        Scenario::Echo => Worker::Echo {
            client: HealthClient::new(channel),
            request: HealthCheckRequest {
                service: String::new(),
            },
        },
        Scenario::Login => Worker::Login {
            client: AuthClient::new(channel),
            request: login_request(user(i)?),
        },
        Scenario::Register => Worker::Register {
            client: AuthClient::new(channel),
            prefix: format!("r.{}.{i}.", build.tag),
            n: 0,
        },
        Scenario::Refresh => {
            let tokens = session(i)?;
            Worker::Refresh {
                client: AuthClient::new(channel),
                refresh_token: tokens.refresh.clone(),
                relogin: login_request(&tokens.email),
                lost: false,
            }
        }
        Scenario::Getme => Worker::GetMe {
            client: AuthClient::new(channel),
            auth: bearer(&session(i)?.access)?,
        },
        Scenario::Validate => Worker::Validate {
            client: AuthClient::new(channel),
            request: ValidateTokenRequest {
                access_token: session(i)?.access.clone(),
            },
        },
        Scenario::ListUsers => Worker::ListUsers {
            client: UserAdminClient::new(channel),
            auth: seeded.admin_auth.clone(),
            page_token: String::new(),
        },
        Scenario::ListMembers => Worker::ListMembers {
            client: OrganizationsClient::new(channel),
            auth: seeded.admin_auth.clone(),
            organization_id: seeded.admin_org.clone(),
            page_token: String::new(),
        },
        Scenario::Mixed => {
            let tokens = session(i)?;
            Worker::Mixed(Box::new(Mixed {
                auth: AuthClient::new(channel.clone()),
                admin: UserAdminClient::new(channel),
                admin_auth: seeded.admin_auth.clone(),
                access: bearer(&tokens.access)?,
                validate: ValidateTokenRequest {
                    access_token: tokens.access.clone(),
                },
                refresh_token: tokens.refresh.clone(),
                login: login_request(&tokens.email),
                lost: false,
                page_token: String::new(),
                register_prefix: format!("m.{}.{i}.", build.tag),
                registered: 0,
                // Any non-zero seed; distinct per worker.
                rng: 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9),
            }))
        }
    })
}

fn with_auth<T>(message: T, auth: &MetadataValue<Ascii>) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", auth.clone());
    request
}

fn register_request(prefix: &str, n: u64) -> RegisterRequest {
    RegisterRequest {
        organization_name: None,
        invitation_token: String::new(),
        email: format!("{prefix}{n}@loadgen.test"),
        password: PASSWORD.to_owned(),
        display_name: String::new(),
    }
}

/// Follows `next_page_token`; an empty one means the last page was reached,
/// and the next call starts over.
async fn list_page(
    client: &mut UserAdminClient<Channel>,
    auth: &MetadataValue<Ascii>,
    page_token: &mut String,
) -> Result<(), Failure> {
    let request = with_auth(
        ListUsersRequest {
            page_size: 50,
            page_token: std::mem::take(page_token),
            status: 0,
            email_contains: String::new(),
        },
        auth,
    );
    let page = client.list_users(request).await?.into_inner();
    if page.users.is_empty() && page.total_size > 0 {
        return Err(Failure::wrong_answer("EMPTY_PAGE"));
    }
    *page_token = page.next_page_token;
    Ok(())
}

/// `list_page` for the members of one organisation.
async fn members_page(
    client: &mut OrganizationsClient<Channel>,
    auth: &MetadataValue<Ascii>,
    organization_id: &str,
    page_token: &mut String,
) -> Result<(), Failure> {
    let request = with_auth(
        ListMembersRequest {
            organization_id: organization_id.to_owned(),
            page_size: 50,
            page_token: std::mem::take(page_token),
        },
        auth,
    );
    let page = client.list_members(request).await?.into_inner();
    if page.members.is_empty() && page.total_size > 0 {
        return Err(Failure::wrong_answer("EMPTY_PAGE"));
    }
    *page_token = page.next_page_token;
    Ok(())
}

impl Worker {
    /// Work done outside the timed call: a worker whose session was lost (a
    /// refresh that failed) logs in again before its next call.
    pub async fn prepare(&mut self) {
        match self {
            Self::Refresh {
                client,
                refresh_token,
                relogin,
                lost,
            } if *lost => {
                if let Ok(answer) = client.login(relogin.clone()).await
                    && let Some(tokens) = answer.into_inner().tokens
                {
                    *refresh_token = tokens.refresh_token;
                    *lost = false;
                }
            }
            Self::Mixed(m) if m.lost => {
                if let Ok(answer) = m.auth.login(m.login.clone()).await
                    && let Some(tokens) = answer.into_inner().tokens
                {
                    m.adopt(&tokens.access_token, tokens.refresh_token);
                }
            }
            _ => {}
        }
    }

    /// One call: which operation it was, and how it went.
    pub async fn call(&mut self) -> (usize, Result<(), Failure>) {
        match self {
            Self::Echo { client, request } => {
                let outcome = match client.check(request.clone()).await {
                    Ok(answer) if answer.get_ref().status == ServingStatus::Serving as i32 => {
                        Ok(())
                    }
                    Ok(_) => Err(Failure::wrong_answer("NOT_SERVING")),
                    Err(status) => Err(status.into()),
                };
                (0, outcome)
            }
            Self::Login { client, request } => (
                0,
                client
                    .login(request.clone())
                    .await
                    .map(drop)
                    .map_err(Into::into),
            ),
            Self::Register { client, prefix, n } => {
                *n += 1;
                let request = register_request(prefix, *n);
                (
                    0,
                    client.register(request).await.map(drop).map_err(Into::into),
                )
            }
            Self::Refresh {
                client,
                refresh_token,
                lost,
                ..
            } => {
                let request = RefreshRequest {
                    refresh_token: refresh_token.clone(),
                };
                let outcome = match client.refresh(request).await {
                    Ok(answer) => match answer.into_inner().tokens {
                        Some(tokens) => {
                            *refresh_token = tokens.refresh_token;
                            Ok(())
                        }
                        None => Err(Failure::wrong_answer("NO_TOKENS")),
                    },
                    Err(status) => Err(status.into()),
                };
                *lost = outcome.is_err();
                (0, outcome)
            }
            Self::GetMe { client, auth } => {
                let request = with_auth(GetMeRequest {}, auth);
                (
                    0,
                    client.get_me(request).await.map(drop).map_err(Into::into),
                )
            }
            Self::Validate { client, request } => {
                let outcome = match client.validate_token(request.clone()).await {
                    Ok(answer) if answer.get_ref().active => Ok(()),
                    Ok(_) => Err(Failure::wrong_answer("INACTIVE")),
                    Err(status) => Err(status.into()),
                };
                (0, outcome)
            }
            Self::ListUsers {
                client,
                auth,
                page_token,
            } => (0, list_page(client, auth, page_token).await),
            Self::ListMembers {
                client,
                auth,
                organization_id,
                page_token,
            } => (
                0,
                members_page(client, auth, organization_id, page_token).await,
            ),
            Self::Mixed(m) => m.call().await,
        }
    }
}

impl Mixed {
    fn next_draw(&mut self) -> u32 {
        // xorshift64*: plenty for picking operations, and no allocation.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 32) % 100) as u32
    }

    /// Takes over a new session's tokens.
    fn adopt(&mut self, access: &str, refresh: String) {
        if let Ok(auth) = bearer(access) {
            self.access = auth;
            self.validate.access_token = access.to_owned();
            self.refresh_token = refresh;
            self.lost = false;
        }
    }

    async fn call(&mut self) -> (usize, Result<(), Failure>) {
        let op = mixed_pick(self.next_draw());
        let outcome = match op {
            0 => match self.auth.validate_token(self.validate.clone()).await {
                Ok(answer) if answer.get_ref().active => Ok(()),
                Ok(_) => Err(Failure::wrong_answer("INACTIVE")),
                Err(status) => Err(status.into()),
            },
            1 => self
                .auth
                .get_me(with_auth(GetMeRequest {}, &self.access))
                .await
                .map(drop)
                .map_err(Into::into),
            2 => {
                let request = RefreshRequest {
                    refresh_token: self.refresh_token.clone(),
                };
                match self.auth.refresh(request).await {
                    Ok(answer) => match answer.into_inner().tokens {
                        Some(tokens) => {
                            self.adopt(&tokens.access_token, tokens.refresh_token);
                            Ok(())
                        }
                        None => Err(Failure::wrong_answer("NO_TOKENS")),
                    },
                    Err(status) => {
                        self.lost = true;
                        Err(status.into())
                    }
                }
            }
            3 => match self.auth.login(self.login.clone()).await {
                Ok(answer) => match answer.into_inner().tokens {
                    Some(tokens) => {
                        // A new login is a new session: carry on with it,
                        // as a client that signed in again would.
                        self.adopt(&tokens.access_token, tokens.refresh_token);
                        Ok(())
                    }
                    None => Err(Failure::wrong_answer("NO_TOKENS")),
                },
                Err(status) => Err(status.into()),
            },
            4 => list_page(&mut self.admin, &self.admin_auth, &mut self.page_token).await,
            _ => {
                self.registered += 1;
                let request = register_request(&self.register_prefix, self.registered);
                self.auth
                    .register(request)
                    .await
                    .map(drop)
                    .map_err(Into::into)
            }
        };
        (op, outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mixed_weights_add_up_to_a_hundred() {
        assert_eq!(MIXED_WEIGHTS.iter().sum::<u32>(), 100);
        assert_eq!(MIXED_WEIGHTS.len(), MIXED_OPS.len());
    }

    #[test]
    fn draws_map_to_operations_by_their_weights() {
        let mut counts = [0u32; 6];
        for draw in 0..100 {
            counts[mixed_pick(draw)] += 1;
        }
        assert_eq!(counts, MIXED_WEIGHTS);
    }
}
