//! The request-field rules (`domain::input`, `PasswordPolicy::check`) on any
//! text: they never panic, and what they accept has the shape API.md
//! promises. An email that parses also shares its lockout key with every
//! spelling that logs into the same account.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;
use unicode_normalization::UnicodeNormalization as _;
use warden::domain::{
    error::Error,
    input::{Device, DisplayName, Email, parse_id},
    password::{MAX_PASSWORD_CHARS, PasswordPolicy},
    rules::lockout::lockout_key,
};

#[derive(Arbitrary, Debug)]
struct Input {
    email: String,
    display_name: String,
    id: String,
    device: (String, String, String),
    password: String,
    /// The configured minimum: 8 to 64.
    min_chars: u8,
    /// The account the password is for; when not a valid email, the email
    /// above or a fixed one.
    account: String,
}

fn email(raw: &str) {
    let Ok(email) = Email::parse("email", raw) else {
        if raw.trim().is_empty() {
            let err = Email::parse("email", raw).unwrap_err();
            assert_eq!(err.description, "must not be empty");
        }
        return;
    };
    let s = email.as_str();
    assert_eq!(s, raw.trim().to_ascii_lowercase(), "normalised");
    assert_eq!(s, s.trim(), "trimmed");
    assert!(s.is_ascii(), "ASCII only: {s:?}");
    assert!(
        !s.bytes().any(|b| b.is_ascii_uppercase()),
        "lower-case: {s:?}"
    );
    assert!(s.len() <= 254, "at most 254 bytes");
    assert_eq!(s.matches('@').count(), 1, "one @: {s:?}");
    let (local, domain) = s.split_once('@').unwrap();
    assert!(!local.is_empty() && !domain.is_empty(), "{s:?}");
    assert_eq!(email.local_part(), local);
    assert!(
        !s.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{s:?}"
    );
    assert_eq!(
        Email::parse("email", s).as_ref(),
        Ok(&email),
        "parses again to itself"
    );
    // Login counts failures under the email as typed.
    assert_eq!(
        lockout_key(raw),
        lockout_key(s),
        "every spelling of an account's email shares its lockout key: {raw:?}"
    );
}

/// What API.md's input rules refuse in text besides control characters:
/// bidi overrides and isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn unprintable(c: char) -> bool {
    c.is_control() || is_bidi_control(c)
}

fn display_name(raw: &str) {
    match DisplayName::parse("display_name", raw) {
        Ok(name) => {
            assert_eq!(name.as_str(), raw, "kept as given");
            assert!(raw.chars().count() <= 100);
            assert!(!raw.chars().any(unprintable));
        }
        Err(v) => assert!(
            raw.chars().count() > 100 || raw.chars().any(unprintable),
            "{v}"
        ),
    }
}

fn id(raw: &str) {
    if let Ok(id) = parse_id("user_id", raw) {
        assert_eq!(parse_id("user_id", &id.to_string()), Ok(id), "{raw:?}");
    }
}

fn device((id, name, kind): &(String, String, String)) {
    match Device::parse(id, name, kind) {
        Ok(d) => {
            assert_eq!((&d.id, &d.name), (id, name));
            assert!(!d.kind.is_empty());
            let trimmed = kind.trim();
            if trimmed.is_empty() {
                assert_eq!(d.kind, Device::UNKNOWN_KIND);
            } else {
                assert_eq!(d.kind, trimmed);
            }
            assert!(id.chars().count() <= 128 && name.chars().count() <= 100);
            assert!(kind.chars().count() <= 32);
            assert!(![id, name, kind].iter().any(|t| t.chars().any(unprintable)));
        }
        Err(violations) => {
            assert!((1..=3).contains(&violations.len()), "{violations:?}");
            let mut fields: Vec<_> = violations.iter().map(|v| v.field).collect();
            fields.dedup();
            assert_eq!(fields.len(), violations.len(), "one violation per field");
        }
    }
}

fn password(raw: &str, min_chars: u8, account: &Email) {
    let policy = PasswordPolicy {
        min_chars: 8 + usize::from(min_chars) % 57,
    };
    let result = policy.check("password", &SecretString::from(raw), account);
    match &result {
        Ok(accepted) => {
            let normalized: String = raw.nfkc().collect();
            assert_eq!(accepted.expose(), normalized, "NFKC-normalised");
            let chars = normalized.chars().count();
            assert!((policy.min_chars..=MAX_PASSWORD_CHARS).contains(&chars));
            let lower = normalized.to_lowercase();
            assert!(!lower.contains(account.as_str()), "contains the email");
            assert_ne!(lower, account.local_part(), "is the local part");
            // What was accepted is accepted again, unchanged.
            let again = policy
                .check(
                    "password",
                    &SecretString::from(accepted.expose().to_owned()),
                    account,
                )
                .expect("an accepted password passes again");
            assert_eq!(again.expose(), accepted.expose());
        }
        Err(Error::InvalidArgument(_)) => assert!(raw.is_empty(), "only empty is missing"),
        Err(Error::WeakPassword(v)) => {
            assert!(!raw.is_empty());
            // Fixed texts only: a description never carries the password.
            assert!(
                [
                    "must be at least ",
                    "must be at most ",
                    "must not contain the email address",
                    "is too common"
                ]
                .iter()
                .any(|fixed| v.description.starts_with(fixed)),
                "{v:?}"
            );
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }
}

fuzz_target!(|input: Input| {
    email(&input.email);
    display_name(&input.display_name);
    id(&input.id);
    device(&input.device);
    let account = Email::parse("email", &input.account)
        .or_else(|_| Email::parse("email", &input.email))
        .unwrap_or_else(|_| Email::parse("email", "marguerite@example.com").unwrap());
    password(&input.password, input.min_chars, &account);
});
