use std::time::Duration;

use futures::future::join_all;
use tonic::Code;
use warden::{proto::v1 as pb, store::entities::user};

use crate::{
    helpers::{
        ADMIN_EMAIL, PASSWORD, TestApp, assert_bad_field, assert_error, spawn_app, spawn_app_with,
    },
    login::set_status,
};

/// A login of the admin: (access token, refresh token, session id).
async fn login(app: &TestApp) -> (String, String, String) {
    let login = app.login(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let tokens = login.tokens.unwrap();
    (tokens.access_token, tokens.refresh_token, login.session_id)
}

async fn registered_admin() -> TestApp {
    let app = spawn_app().await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    app
}

#[tokio::test]
async fn refresh_rotates_the_refresh_token() {
    let app = registered_admin().await;
    let (_, first, session_id) = login(&app).await;
    let pair = app.refresh(&first).await.unwrap();
    assert_ne!(pair.refresh_token, first);
    assert_eq!(pair.token_type, "Bearer");
    assert_eq!(pair.expires_in, 15 * 60);
    // The new access token belongs to the same session.
    let answer = app.validate(&pair.access_token).await.unwrap();
    assert!(answer.active);
    assert_eq!(answer.session_id, session_id);
    // The new refresh token works once more; the old one is spent.
    let next = app.refresh(&pair.refresh_token).await.unwrap();
    assert_ne!(next.refresh_token, pair.refresh_token);
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_whole_session() {
    let app = registered_admin().await;
    let (_, first, _) = login(&app).await;
    let rotated = app.refresh(&first).await.unwrap();

    assert_error(
        app.refresh(&first).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_REUSED",
    );
    // The session is gone: its newest refresh token and its access tokens.
    assert_error(
        app.refresh(&rotated.refresh_token).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );
    assert_error(
        app.get_me_with(Some(&format!("Bearer {}", rotated.access_token)))
            .await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!app.validate(&rotated.access_token).await.unwrap().active);
    // A rotated token stays recognisable as reused.
    assert_error(
        app.refresh(&first).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_REUSED",
    );
}

#[tokio::test]
async fn reuse_revokes_only_the_session_it_belongs_to() {
    let app = registered_admin().await;
    let (_, stolen, _) = login(&app).await;
    let (other_access, _, _) = login(&app).await;
    app.refresh(&stolen).await.unwrap();
    assert_error(
        app.refresh(&stolen).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_REUSED",
    );
    assert!(app.validate(&other_access).await.unwrap().active);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_refreshes_of_one_token_give_at_most_one_new_pair() {
    let app = registered_admin().await;
    for _ in 0..5 {
        let (_, token, _) = login(&app).await;
        let results = join_all((0..8).map(|_| app.refresh(&token))).await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert!(winners <= 1, "{winners} callers got new tokens");
        for result in results.into_iter().filter(Result::is_err) {
            assert_error(result, Code::Unauthenticated, "REFRESH_TOKEN_REUSED");
        }
    }
}

#[tokio::test]
async fn unknown_empty_and_garbage_refresh_tokens_are_refused() {
    let app = registered_admin().await;
    login(&app).await;
    assert_bad_field(app.refresh("").await, "INVALID_ARGUMENT", "refresh_token");
    for bad in [
        "not-a-token",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        &"x".repeat(4000),
    ] {
        assert_error(
            app.refresh(bad).await,
            Code::Unauthenticated,
            "REFRESH_TOKEN_INVALID",
        );
    }
}

#[tokio::test]
async fn a_refresh_token_expires_after_its_ttl_of_inactivity() {
    let app = spawn_app_with(|c| c.refresh_token_ttl = Duration::from_secs(60)).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let (_, token, _) = login(&app).await;
    // Used within the window, the session slides forward.
    app.clock.advance(Duration::from_secs(40));
    let pair = app.refresh(&token).await.unwrap();
    app.clock.advance(Duration::from_secs(40));
    let pair = app.refresh(&pair.refresh_token).await.unwrap();
    // Left alone longer than the TTL, it is dead.
    app.clock.advance(Duration::from_secs(61));
    assert_error(
        app.refresh(&pair.refresh_token).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );
}

#[tokio::test]
async fn refresh_moves_last_used_and_expiry_forward() {
    let app = registered_admin().await;
    let (_, token, session_id) = login(&app).await;
    app.clock.advance(Duration::from_secs(3600));
    let pair = app.refresh(&token).await.unwrap();
    let now = app.now();
    let sessions = app.list_sessions(&pair.access_token, false).await.unwrap();
    let session = sessions.iter().find(|s| s.id == session_id).unwrap();
    assert_eq!(session.last_used_at.unwrap().seconds, now.timestamp());
    assert_eq!(
        session.expires_at.unwrap().seconds,
        now.timestamp() + 30 * 86_400
    );
    assert_eq!(pair.refresh_expires_at, session.expires_at);
    assert!(session.created_at.unwrap().seconds < now.timestamp());
}

#[tokio::test]
async fn refresh_tokens_of_revoked_sessions_or_disabled_users_are_invalid() {
    let app = registered_admin().await;
    let (access, token, _) = login(&app).await;
    app.logout(&access, false).await.unwrap();
    assert_error(
        app.refresh(&token).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );

    let user = app.register("second@example.com", PASSWORD).await.unwrap();
    set_status(&app, &user.id, user::Status::Approved).await;
    let second = app.login("second@example.com", PASSWORD).await.unwrap();
    set_status(&app, &user.id, user::Status::Disabled).await;
    let refresh = second.tokens.unwrap().refresh_token;
    assert_error(
        app.refresh(&refresh).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );
}

#[tokio::test]
async fn logout_revokes_only_the_current_session() {
    let app = registered_admin().await;
    let (a, a_refresh, _) = login(&app).await;
    let (b, _, _) = login(&app).await;
    assert_eq!(app.logout(&a, false).await.unwrap(), 1);
    assert_error(
        app.get_me(&a).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
    assert!(!app.validate(&a).await.unwrap().active);
    assert_error(
        app.refresh(&a_refresh).await,
        Code::Unauthenticated,
        "REFRESH_TOKEN_INVALID",
    );
    assert!(app.get_me(&b).await.is_ok());
}

#[tokio::test]
async fn logout_of_all_sessions_revokes_every_one() {
    let app = registered_admin().await;
    let tokens = [
        login(&app).await.0,
        login(&app).await.0,
        login(&app).await.0,
    ];
    assert_eq!(app.logout(&tokens[1], true).await.unwrap(), 3);
    for token in &tokens {
        assert!(!app.validate(token).await.unwrap().active);
    }
}

#[tokio::test]
async fn bearer_rpcs_refuse_a_missing_token() {
    let app = registered_admin().await;
    let mut auth = app.auth.clone();
    let results = [
        auth.logout(pb::LogoutRequest::default()).await.map(|_| ()),
        auth.list_sessions(pb::ListSessionsRequest::default())
            .await
            .map(|_| ()),
        auth.revoke_session(pb::RevokeSessionRequest::default())
            .await
            .map(|_| ()),
        auth.change_password(pb::ChangePasswordRequest::default())
            .await
            .map(|_| ()),
        auth.update_me(pb::UpdateMeRequest::default())
            .await
            .map(|_| ()),
    ];
    for result in results {
        assert_error(result, Code::Unauthenticated, "TOKEN_MISSING");
    }
}

#[tokio::test]
async fn sessions_are_listed_newest_first_with_the_current_one_marked() {
    let app = registered_admin().await;
    let (_, _, first) = login(&app).await;
    app.clock.advance(Duration::from_secs(1));
    let (second_access, _, second) = login(&app).await;
    app.clock.advance(Duration::from_secs(1));
    let (_, _, third) = login(&app).await;

    let sessions = app.list_sessions(&second_access, false).await.unwrap();
    let ids: Vec<_> = sessions.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [third.as_str(), second.as_str(), first.as_str()]);
    let current: Vec<_> = sessions
        .iter()
        .filter(|s| s.current)
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(current, [second.as_str()]);
    let listed = &sessions[1];
    assert_eq!(listed.ip_address, "127.0.0.1");
    assert_eq!(listed.device.as_ref().unwrap().device_type, "unknown");
    assert!(listed.revoked_at.is_none());
}

#[tokio::test]
async fn inactive_sessions_are_listed_only_on_request() {
    let app = registered_admin().await;
    let (gone, _, gone_id) = login(&app).await;
    let (kept, _, _) = login(&app).await;
    app.logout(&gone, false).await.unwrap();
    let live = app.list_sessions(&kept, false).await.unwrap();
    assert_eq!(live.len(), 1);
    let all = app.list_sessions(&kept, true).await.unwrap();
    assert_eq!(all.len(), 2);
    let revoked = all.iter().find(|s| s.id == gone_id).unwrap();
    assert!(revoked.revoked_at.is_some());
}

#[tokio::test]
async fn a_user_sees_and_revokes_only_their_own_sessions() {
    let app = registered_admin().await;
    let (admin, _, admin_session) = login(&app).await;
    let user = app.register("other@example.com", PASSWORD).await.unwrap();
    set_status(&app, &user.id, user::Status::Approved).await;
    let other = app.login("other@example.com", PASSWORD).await.unwrap();
    let other_access = other.tokens.unwrap().access_token;

    let listed = app.list_sessions(&other_access, true).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, other.session_id);

    let status = assert_error(
        app.revoke_session(&other_access, &admin_session).await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    let unknown = assert_error(
        app.revoke_session(&other_access, &uuid::Uuid::new_v4().to_string())
            .await,
        Code::NotFound,
        "SESSION_NOT_FOUND",
    );
    assert_eq!(
        status.message(),
        unknown.message(),
        "no hint that the session exists"
    );
    assert!(app.validate(&admin).await.unwrap().active);
}

#[tokio::test]
async fn revoking_a_session_ends_it_and_repeating_that_changes_nothing() {
    let app = registered_admin().await;
    let (phone, _, phone_id) = login(&app).await;
    let (laptop, _, _) = login(&app).await;
    app.revoke_session(&laptop, &phone_id).await.unwrap();
    assert!(!app.validate(&phone).await.unwrap().active);
    let revoked_at = |sessions: Vec<pb::Session>| {
        sessions
            .into_iter()
            .find(|s| s.id == phone_id)
            .unwrap()
            .revoked_at
    };
    let first = revoked_at(app.list_sessions(&laptop, true).await.unwrap());
    app.clock.advance(Duration::from_secs(5));
    app.revoke_session(&laptop, &phone_id).await.unwrap();
    assert_eq!(
        revoked_at(app.list_sessions(&laptop, true).await.unwrap()),
        first
    );
}

#[tokio::test]
async fn revoking_the_current_session_is_a_logout() {
    let app = registered_admin().await;
    let (access, _, session_id) = login(&app).await;
    app.revoke_session(&access, &session_id).await.unwrap();
    assert_error(
        app.get_me(&access).await,
        Code::Unauthenticated,
        "SESSION_REVOKED",
    );
}

#[tokio::test]
async fn a_session_id_must_be_a_uuid() {
    let app = registered_admin().await;
    let (access, _, _) = login(&app).await;
    for bad in ["", "42", "not-a-uuid"] {
        assert_bad_field(
            app.revoke_session(&access, bad).await,
            "INVALID_ARGUMENT",
            "session_id",
        );
    }
}

#[tokio::test]
async fn ended_sessions_are_pruned_after_the_retention_period() {
    let app = registered_admin().await;
    let (ended, _, ended_id) = login(&app).await;
    let (_, live_refresh, _) = login(&app).await;
    app.logout(&ended, false).await.unwrap();

    app.clock.advance(Duration::from_secs(6 * 86_400));
    app.state.accounts.prune(app.now()).await.unwrap();
    let pair = app.refresh(&live_refresh).await.unwrap();
    let all = app.list_sessions(&pair.access_token, true).await.unwrap();
    assert!(
        all.iter().any(|s| s.id == ended_id),
        "kept within the retention period"
    );

    app.clock.advance(Duration::from_secs(2 * 86_400));
    let (sessions, _) = app.state.accounts.prune(app.now()).await.unwrap();
    assert_eq!(sessions, 1);
    let pair = app.refresh(&pair.refresh_token).await.unwrap();
    let all = app.list_sessions(&pair.access_token, true).await.unwrap();
    assert!(all.iter().all(|s| s.id != ended_id), "pruned after it");
    assert_eq!(all.len(), 1, "the live session stays");
}

/// Concurrent bearer calls share database reads; each must still be answered
/// with its own session and user, and a revoked session among them refused.
#[tokio::test]
async fn concurrent_bearer_calls_each_get_their_own_account() {
    let app = registered_admin().await;
    let mut tokens = Vec::new();
    for i in 0..12 {
        let email = format!("user{i}@example.com");
        let user = app.register(&email, PASSWORD).await.unwrap();
        set_status(&app, &user.id, user::Status::Approved).await;
        let login = app.login(&email, PASSWORD).await.unwrap();
        tokens.push((email, login.tokens.unwrap().access_token));
    }
    let (revoked_email, revoked_token) = tokens.pop().unwrap();
    app.logout(&revoked_token, false).await.unwrap();
    let app = &app;
    for _ in 0..5 {
        let calls = tokens.iter().flat_map(|(email, token)| {
            (0..4).map(move |_| async move {
                let bearer = format!("Bearer {token}");
                (email, app.get_me_with(Some(&bearer)).await)
            })
        });
        for (email, me) in join_all(calls).await {
            assert_eq!(&me.unwrap().email, email);
        }
        let bearer = format!("Bearer {revoked_token}");
        let (revoked, others) = tokio::join!(
            app.get_me_with(Some(&bearer)),
            join_all(tokens.iter().map(|(_, t)| app.validate(t)))
        );
        assert_error(revoked, Code::Unauthenticated, "SESSION_REVOKED");
        assert!(others.iter().all(|answer| answer.as_ref().unwrap().active));
        assert!(
            !app.validate(&revoked_token).await.unwrap().active,
            "{revoked_email}"
        );
    }
}

/// The `ip_address` ListSessions shows for a login whose request carried
/// these `x-forwarded-for` fields, on a server trusting `trusted`.
async fn recorded_address(trusted: &[&str], forwarded: &[&str]) -> String {
    let trusted: Vec<ipnet::IpNet> = trusted.iter().map(|n| n.parse().unwrap()).collect();
    let app = spawn_app_with(|c| c.trusted_proxies = trusted).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let mut request = tonic::Request::new(pb::LoginRequest {
        organization_id: None,
        email: ADMIN_EMAIL.into(),
        password: PASSWORD.into(),
        device: None,
    });
    for value in forwarded {
        request
            .metadata_mut()
            .append("x-forwarded-for", value.parse().unwrap());
    }
    let login = app.auth.clone().login(request).await.unwrap().into_inner();
    let access = login.tokens.unwrap().access_token;
    let sessions = app.list_sessions(&access, false).await.unwrap();
    let session = sessions.iter().find(|s| s.id == login.session_id).unwrap();
    session.ip_address.clone()
}

/// The test client's peer address.
const PEER: &str = "127.0.0.1/32";

#[tokio::test]
async fn a_trusted_proxys_hop_is_the_client_and_addresses_put_in_front_never_count() {
    assert_eq!(
        recorded_address(&[PEER], &["1.1.1.1, 203.0.113.8"]).await,
        "203.0.113.8"
    );
}

#[tokio::test]
async fn trusted_hops_are_skipped_from_the_right() {
    assert_eq!(
        recorded_address(&[PEER], &["203.0.113.8, 127.0.0.1"]).await,
        "203.0.113.8"
    );
}

#[tokio::test]
async fn when_every_hop_is_trusted_the_leftmost_is_the_client() {
    assert_eq!(
        recorded_address(&[PEER, "10.0.0.0/8"], &["10.0.0.7, 10.0.0.8, 127.0.0.1"]).await,
        "10.0.0.7"
    );
}

#[tokio::test]
async fn a_hop_that_is_not_an_address_before_the_client_means_the_peer() {
    assert_eq!(
        recorded_address(&[PEER], &["203.0.113.7, garbage"]).await,
        "127.0.0.1"
    );
}

#[tokio::test]
async fn an_untrusted_peers_forwarded_header_is_ignored() {
    assert_eq!(
        recorded_address(&["10.0.0.0/8"], &["203.0.113.8"]).await,
        "127.0.0.1"
    );
}

#[tokio::test]
async fn several_forwarded_headers_count_as_one_list_in_order() {
    assert_eq!(
        recorded_address(&[PEER], &["1.1.1.1", "203.0.113.8", "127.0.0.1"]).await,
        "203.0.113.8"
    );
}

#[tokio::test]
async fn a_session_refreshed_without_pause_still_ends_at_its_maximum_lifetime() {
    let app = spawn_app_with(|c| c.session_max_lifetime = Duration::from_secs(4)).await;
    app.register(ADMIN_EMAIL, PASSWORD).await.unwrap();
    let (mut access, mut refresh, session_id) = login(&app).await;
    let created = app.list_sessions(&access, false).await.unwrap()[0]
        .created_at
        .unwrap();
    let limit = (created.seconds + 4, created.nanos);
    let step = Duration::from_millis(500);
    let mut refreshed = 0;
    loop {
        let listed = app.list_sessions(&access, false).await.unwrap();
        let session = listed.iter().find(|s| s.id == session_id).unwrap();
        let expires = session.expires_at.unwrap();
        assert!(
            (expires.seconds, expires.nanos) <= limit,
            "expires_at {expires:?} is past created_at {created:?} + 4 s"
        );
        app.clock.advance(step);
        match app.refresh(&refresh).await {
            Ok(pair) => {
                let until = pair.refresh_expires_at.unwrap();
                assert!((until.seconds, until.nanos) <= limit, "{until:?}");
                (access, refresh) = (pair.access_token, pair.refresh_token);
                refreshed += 1;
            }
            Err(status) => {
                assert_error::<()>(Err(status), Code::Unauthenticated, "REFRESH_TOKEN_INVALID");
                break;
            }
        }
        assert!(refreshed < 100, "still refreshing after 50 s");
    }
    // Refreshed at 0.5 s … 3.5 s; refused at 4 s.
    assert_eq!(refreshed, 7);
}

/// A backlog far larger than one batch of the prune (as after months
/// without a prune that could finish): sessions and tokens inserted
/// directly.
#[tokio::test]
async fn a_backlog_of_many_batches_of_ended_sessions_is_pruned_by_one_run_and_live_ones_stay() {
    use chrono::TimeDelta;
    use sea_orm::{EntityTrait, PaginatorTrait};
    use warden::store::entities::{refresh_token, session};

    const ENDED: usize = 12_000;
    let app = registered_admin().await;
    let (_, live_refresh, live_id) = login(&app).await;
    let user_id =
        uuid::Uuid::parse_str(&app.validate(&login(&app).await.0).await.unwrap().user_id).unwrap();
    let long_ago = app.now() - TimeDelta::days(30);
    let ended: Vec<session::Model> = (0..ENDED)
        .map(|i| session::Model {
            organization_id: None,
            id: uuid::Uuid::new_v4(),
            user_id,
            device_id: String::new(),
            device_name: String::new(),
            device_type: "unknown".into(),
            user_agent: String::new(),
            ip_address: String::new(),
            created_at: long_ago - TimeDelta::days(30),
            last_used_at: long_ago,
            // Half expired, half revoked while they would still have lived.
            expires_at: if i % 2 == 0 {
                long_ago
            } else {
                app.now() + TimeDelta::days(1)
            },
            revoked_at: (i % 2 == 1).then_some(long_ago),
        })
        .collect();
    // Each with a rotated token and its successor.
    let tokens: Vec<refresh_token::Model> = ended
        .iter()
        .flat_map(|s| {
            [Some(long_ago), None].map(|rotated_at| refresh_token::Model {
                token_hash: uuid::Uuid::new_v4().as_bytes().to_vec(),
                session_id: s.id,
                created_at: long_ago,
                expires_at: s.expires_at,
                rotated_at,
            })
        })
        .collect();
    for chunk in ended.chunks(1_000) {
        session::Entity::insert_many(chunk.iter().cloned().map(session::ActiveModel::from))
            .exec(app.db())
            .await
            .unwrap();
    }
    for chunk in tokens.chunks(2_000) {
        refresh_token::Entity::insert_many(
            chunk.iter().cloned().map(refresh_token::ActiveModel::from),
        )
        .exec(app.db())
        .await
        .unwrap();
    }
    let live_sessions = session::Entity::find().count(app.db()).await.unwrap() - ENDED as u64;
    let live_tokens =
        refresh_token::Entity::find().count(app.db()).await.unwrap() - tokens.len() as u64;

    let (sessions, pruned_tokens) = app.state.accounts.prune(app.now()).await.unwrap();
    assert_eq!(sessions, ENDED as u64, "every ended session, in one run");
    assert_eq!(
        pruned_tokens,
        tokens.len() as u64,
        "with every token of theirs"
    );
    assert_eq!(
        session::Entity::find().count(app.db()).await.unwrap(),
        live_sessions
    );
    assert_eq!(
        refresh_token::Entity::find().count(app.db()).await.unwrap(),
        live_tokens
    );
    // The live sessions are untouched and keep working.
    let pair = app.refresh(&live_refresh).await.unwrap();
    let all = app.list_sessions(&pair.access_token, true).await.unwrap();
    assert!(all.iter().any(|s| s.id == live_id));
    assert_eq!(all.len() as u64, live_sessions);
}
