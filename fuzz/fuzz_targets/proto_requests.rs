//! Any bytes decoded as each `warden.v1` request message, as tonic would,
//! then run through the field checks and conversions its handler and the
//! domain apply before touching the database. Nothing may panic; status
//! numbers convert as the contract says; a decoded message encodes and
//! decodes to itself.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use secrecy::SecretString;
use warden::{
    domain::{
        input::{Device, DisplayName, Email, parse_id},
        page_token,
        password::PasswordPolicy,
        tokens::hash_refresh_token,
        types::UserFilter,
    },
    grpc::convert::{new_status, status_filter},
    proto::v1 as pb,
};
use warden_fuzz::{SERVICE, base_time};

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) {
    let again = M::decode(message.encode_to_vec().as_slice()).expect("re-decodes");
    assert_eq!(&again, message);
}

fn decode<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    round_trip(&message);
    Some(message)
}

fn profile(email: &str, display_name: &str, password: Option<&str>) {
    let email = Email::parse("email", email);
    let _ = DisplayName::parse("display_name", display_name);
    if let (Ok(email), Some(password)) = (email, password) {
        let _ = PasswordPolicy { min_chars: 15 }.check(
            "password",
            &SecretString::from(password.to_owned()),
            &email,
        );
    }
}

fn status_number(value: i32) {
    match status_filter("status", value) {
        Ok(None) => assert_eq!(value, 0),
        Ok(Some(_)) => assert!((1..=3).contains(&value)),
        Err(_) => assert!(!(0..=3).contains(&value)),
    }
    assert_eq!(
        new_status("status", value).is_ok(),
        (1..=3).contains(&value)
    );
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 12 {
        0 => {
            if let Some(r) = decode::<pb::RegisterRequest>(bytes) {
                profile(&r.email, &r.display_name, Some(&r.password));
            }
        }
        1 => {
            if let Some(r) = decode::<pb::LoginRequest>(bytes) {
                let _ = Email::parse("email", &r.email);
                if let Some(d) = r.device {
                    let _ = Device::parse(&d.device_id, &d.device_name, &d.device_type);
                }
            }
        }
        2 => {
            if let Some(r) = decode::<pb::RefreshRequest>(bytes) {
                assert_eq!(hash_refresh_token(&r.refresh_token).len(), 32);
            }
        }
        3 => {
            if let Some(r) = decode::<pb::UpdateMeRequest>(bytes) {
                profile(
                    r.email.as_deref().unwrap_or("a@b"),
                    r.display_name.as_deref().unwrap_or(""),
                    None,
                );
            }
        }
        4 => {
            if let Some(r) = decode::<pb::ChangePasswordRequest>(bytes) {
                profile("marguerite@example.com", "", Some(&r.new_password));
            }
        }
        5 => {
            if let Some(r) = decode::<pb::RevokeSessionRequest>(bytes) {
                let _ = parse_id("session_id", &r.session_id);
            }
        }
        6 => {
            if let Some(r) = decode::<pb::ValidateTokenRequest>(bytes) {
                let _ = SERVICE.verify(&r.access_token, base_time());
            }
        }
        7 => {
            if let Some(r) = decode::<pb::ListUsersRequest>(bytes) {
                status_number(r.status);
                let email_contains = r.email_contains.trim().to_lowercase();
                let filter = UserFilter {
                    status: status_filter("status", r.status).ok().flatten(),
                    email_contains: (!email_contains.is_empty()).then_some(email_contains),
                };
                if !r.page_token.is_empty() {
                    let opened =
                        page_token::open(&SERVICE.page_token_keys(), &r.page_token, &filter);
                    assert!(opened.is_err(), "a page token the fuzzer made up opened");
                }
            }
        }
        8 => {
            if let Some(r) = decode::<pb::CreateUserRequest>(bytes) {
                profile(&r.email, &r.display_name, Some(&r.password));
            }
        }
        9 => {
            if let Some(r) = decode::<pb::UpdateUserRequest>(bytes) {
                let _ = parse_id("user_id", &r.user_id);
                if let Some(status) = r.status {
                    status_number(status);
                }
                profile(
                    r.email.as_deref().unwrap_or("a@b"),
                    r.display_name.as_deref().unwrap_or(""),
                    None,
                );
            }
        }
        10 => {
            if let Some(r) = decode::<pb::ResetPasswordRequest>(bytes) {
                let _ = parse_id("user_id", &r.user_id);
                profile("marguerite@example.com", "", Some(&r.new_password));
            }
        }
        _ => {
            for id in [
                decode::<pb::GetUserRequest>(bytes).map(|r| r.user_id),
                decode::<pb::DeleteUserRequest>(bytes).map(|r| r.user_id),
                decode::<pb::ListUserSessionsRequest>(bytes).map(|r| r.user_id),
                decode::<pb::RevokeUserSessionsRequest>(bytes).map(|r| r.user_id),
            ]
            .into_iter()
            .flatten()
            {
                let _ = parse_id("user_id", &id);
            }
        }
    }
});
