//! Microbenchmarks (criterion) of what every call pays for: password hashing,
//! access tokens, request validation and the small domain functions on the
//! hot paths. `cargo bench --bench micro` runs them all (a few minutes);
//! `cargo bench --bench micro -- token` runs those whose name has `token`.
//! They measure one call on one core: the load generator measures the
//! service.

use std::{hint::black_box, time::Duration};

use chrono::{DateTime, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use secrecy::SecretString;
use uuid::Uuid;
use warden::{
    domain::{
        input::{Device, DisplayName, Email, parse_id},
        page_token::{self, Cursor},
        password::{Hasher, HashingCost, PasswordPolicy},
        rules::lockout::lockout_key,
        tokens::{RefreshToken, TokenService, generate_signing_key, hash_refresh_token},
        types::{User, UserFilter, UserStatus},
    },
    proto::v1 as pb,
};

const PASSPHRASE: &str = "correct horse battery staple";

fn email() -> Email {
    Email::parse("email", "marguerite@example.com").expect("a valid email")
}

/// Through `Hasher`, as the service calls it: on the blocking pool, behind
/// its semaphore.
fn passwords(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let policy = PasswordPolicy { min_chars: 15 };
    let password = policy
        .check("password", &SecretString::from(PASSPHRASE), &email())
        .expect("an acceptable password");
    let secret = SecretString::from(PASSPHRASE);
    let costs = [
        ("owasp", HashingCost::default()),
        // What the integration tests use.
        (
            "test",
            HashingCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
        ),
    ];
    let mut group = c.benchmark_group("password");
    for (name, cost) in costs {
        let hasher = Hasher::new(cost, 1).expect("a hasher");
        let phc = runtime.block_on(hasher.hash(&password)).expect("a hash");
        if name == "owasp" {
            // About 25 ms a call: fewer samples, same confidence.
            group.sample_size(20);
        } else {
            group.sample_size(100);
        }
        group.bench_function(format!("hash/{name}"), |b| {
            b.iter(|| runtime.block_on(hasher.hash(&password)).expect("a hash"))
        });
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| {
                let ok = runtime
                    .block_on(hasher.verify(&secret, Some(&phc)))
                    .expect("a verification");
                assert!(ok);
            })
        });
    }
    group.finish();
}

fn token_service(now: DateTime<Utc>) -> TokenService {
    let key = generate_signing_key(now, None).expect("a key");
    TokenService::new(
        "warden".into(),
        "warden".into(),
        Duration::from_secs(900),
        &[key],
        None,
    )
    .expect("a token service")
}

/// Through the public `TokenService` API. `verify/fresh` gets a token never
/// seen before on every call; `verify/same` the same token again and again
/// (what a client makes of one access token for its 15 minutes).
fn tokens(c: &mut Criterion) {
    let now = Utc::now();
    let service = token_service(now);
    let (user, session) = (Uuid::now_v7(), Uuid::now_v7());
    let mut group = c.benchmark_group("token");
    group.bench_function("issue", |b| {
        b.iter(|| {
            service
                .issue(black_box(user), session, now)
                .expect("a token")
        })
    });
    group.bench_function("verify/fresh", |b| {
        b.iter_batched(
            || service.issue(user, session, now).expect("a token").token,
            |token| service.verify(&token, now).expect("a valid token"),
            BatchSize::SmallInput,
        )
    });
    let token = service.issue(user, session, now).expect("a token").token;
    group.bench_function("verify/same", |b| {
        b.iter(|| {
            service
                .verify(black_box(&token), now)
                .expect("a valid token")
        })
    });
    group.bench_function("verify/tampered", |b| {
        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        b.iter(|| {
            assert!(service.verify(black_box(&tampered), now).is_err());
        })
    });
    group.finish();
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    group.bench_function("email", |b| {
        b.iter(|| Email::parse("email", black_box("  Ada.Lovelace+work@Example.COM ")))
    });
    group.bench_function("display_name", |b| {
        b.iter(|| DisplayName::parse("display_name", black_box("Ada Lovelace")))
    });
    group.bench_function("device", |b| {
        b.iter(|| {
            Device::parse(
                black_box("4b0a5f5e-8b1c-4e1e-9a59-6b6f1e0f9c11"),
                black_box("Ada's laptop"),
                black_box("web"),
            )
        })
    });
    group.bench_function("id", |b| {
        b.iter(|| parse_id("user_id", black_box("4b0a5f5e-8b1c-4e1e-9a59-6b6f1e0f9c11")))
    });
    // NFKC, length, the email, and two block-list lookups (as typed and
    // lower-cased) that both miss.
    let policy = PasswordPolicy { min_chars: 15 };
    let (account, accepted) = (email(), SecretString::from(PASSPHRASE));
    group.bench_function("password_policy/accepted", |b| {
        b.iter(|| policy.check("password", black_box(&accepted), &account))
    });
    // A block-list hit: refused after the first lookup.
    let lenient = PasswordPolicy { min_chars: 8 };
    let common = SecretString::from("password123");
    group.bench_function("password_policy/common", |b| {
        b.iter(|| {
            assert!(
                lenient
                    .check("password", black_box(&common), &account)
                    .is_err()
            )
        })
    });
    group.finish();
}

fn domain(c: &mut Criterion) {
    let mut group = c.benchmark_group("domain");
    let key = [7u8; 32];
    let filter = UserFilter {
        status: Some(UserStatus::Pending),
        email_contains: Some("example".into()),
    };
    let cursor = Cursor {
        created_at: Utc::now(),
        id: Uuid::now_v7(),
    };
    group.bench_function("page_token/seal", |b| {
        b.iter(|| page_token::seal(&key, black_box(cursor), &filter))
    });
    let sealed = page_token::seal(&key, cursor, &filter);
    // Two keys, the second one sealed it: the worst case after a rotation.
    let keys = [[1u8; 32], key];
    group.bench_function("page_token/open", |b| {
        b.iter(|| page_token::open(&keys, black_box(&sealed), &filter).expect("opens"))
    });
    group.bench_function("refresh_token/generate", |b| {
        b.iter(|| RefreshToken::generate().expect("a token"))
    });
    let refresh = "_tP4Y8sEZloXITZQMNlP6PKwvxtvEi1eOKvm6GAuSAE";
    group.bench_function("refresh_token/hash", |b| {
        b.iter(|| hash_refresh_token(black_box(refresh)))
    });
    group.bench_function("lockout_key", |b| {
        b.iter(|| lockout_key(black_box(" Ada.Lovelace@Example.com ")))
    });
    let now = Utc::now();
    let user = User {
        id: Uuid::now_v7(),
        email: "ada.lovelace@example.com".into(),
        display_name: "Ada Lovelace".into(),
        is_admin: false,
        status: UserStatus::Approved,
        created_at: now,
        updated_at: now,
        approved_at: Some(now),
        approved_by: Some(Uuid::now_v7()),
        email_verified: true,
        email_verified_at: Some(now),
    };
    group.bench_function("user_to_proto", |b| {
        b.iter_batched(|| user.clone(), pb::User::from, BatchSize::SmallInput)
    });
    group.finish();
}

criterion_group!(benches, passwords, tokens, validation, domain);
criterion_main!(benches);
