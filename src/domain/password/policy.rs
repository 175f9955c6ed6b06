//! What warden accepts as a new password (NIST SP 800-63B rev. 4 §3.1.1.2):
//! length after NFKC normalisation, a block-list and the email; no
//! composition rules.

use secrecy::{ExposeSecret, SecretString};
use unicode_normalization::UnicodeNormalization;

use crate::{
    domain::error::{Error, FieldViolation, Result},
    domain::input::Email,
};

/// NIST SP 800-63B asks verifiers to accept at least 64 characters; 128 keeps
/// hashing input bounded.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// What the service accepts as a new password. There are no composition
/// rules, as NIST advises: length, the block-list and the email decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    pub min_chars: usize,
}

/// A password after NFKC normalisation, the form that is checked and hashed
/// (so the same password typed on two keyboards hashes the same).
pub struct NewPassword(SecretString);

impl NewPassword {
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub(super) fn secret(&self) -> &SecretString {
        &self.0
    }
}

pub fn normalize(password: &str) -> SecretString {
    SecretString::from(password.nfkc().collect::<String>())
}

impl PasswordPolicy {
    /// Checks a new password for the account with `email`. An empty password
    /// is a missing field (INVALID_ARGUMENT); any other failure is
    /// WEAK_PASSWORD.
    pub fn check(
        &self,
        field: &'static str,
        password: &SecretString,
        email: &Email,
    ) -> Result<NewPassword> {
        let raw = password.expose_secret();
        if raw.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        let normalized = normalize(raw);
        let candidate = normalized.expose_secret();
        let weak =
            |description: String| Error::WeakPassword(FieldViolation::new(field, description));
        let chars = candidate.chars().count();
        if chars < self.min_chars {
            return Err(weak(format!(
                "must be at least {} characters",
                self.min_chars
            )));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(weak(format!(
                "must be at most {MAX_PASSWORD_CHARS} characters"
            )));
        }
        let lower = candidate.to_lowercase();
        if mentions_email(&lower, email) {
            return Err(weak("must not contain the email address".to_owned()));
        }
        if is_common(candidate, &lower) {
            return Err(weak("is too common".to_owned()));
        }
        Ok(NewPassword(normalized))
    }
}

/// The bundled block-list holds about 100,000 leaked passwords; looking up the
/// lower-cased form too makes the check case-insensitive.
fn is_common(password: &str, lower: &str) -> bool {
    passwords::analyzer::is_common_password(password)
        || passwords::analyzer::is_common_password(lower)
}

/// Equal to, or containing, the email or its local part. A very short local
/// part ("jo") would forbid too much, so it counts only when equal.
fn mentions_email(lower: &str, email: &Email) -> bool {
    let local = email.local_part();
    lower == local
        || lower.contains(email.as_str())
        || (local.chars().count() >= 4 && lower.contains(local))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email::parse("email", "marguerite@example.com").unwrap()
    }

    fn check(min: usize, password: &str) -> Result<NewPassword> {
        PasswordPolicy { min_chars: min }.check("password", &SecretString::from(password), &email())
    }

    fn weak_reason(result: Result<NewPassword>) -> String {
        match result {
            Err(Error::WeakPassword(v)) => v.description,
            Err(other) => panic!("expected WeakPassword, got {other:?}"),
            Ok(_) => panic!("expected WeakPassword, got a valid password"),
        }
    }

    #[test]
    fn an_empty_password_is_a_missing_field() {
        assert!(matches!(check(15, ""), Err(Error::InvalidArgument(_))));
    }

    #[test]
    fn length_is_counted_in_characters_after_nfkc() {
        // 15 characters, 30 bytes.
        assert!(check(15, &"é".repeat(15)).is_ok());
        assert!(weak_reason(check(15, &"é".repeat(14))).contains("at least 15"));
        assert!(check(8, &"ü".repeat(MAX_PASSWORD_CHARS)).is_ok());
        assert!(weak_reason(check(8, &"ü".repeat(MAX_PASSWORD_CHARS + 1))).contains("at most 128"));
        // U+FB01 (ﬁ ligature) is two characters after NFKC: "fi".
        let normalized = check(8, "\u{FB01}\u{FB01}\u{FB01}\u{FB01}").unwrap();
        assert_eq!(normalized.expose(), "fifififi");
    }

    #[test]
    fn common_passwords_are_refused_whatever_their_case() {
        for common in ["password123", "PASSWORD123", "Iloveyou123", "qwertyuiop"] {
            assert_eq!(weak_reason(check(8, common)), "is too common", "{common}");
        }
    }

    #[test]
    fn the_email_and_its_local_part_are_refused() {
        for bad in [
            "marguerite",
            "MARGUERITE!2024",
            "marguerite@example.com",
            "my-marguerite-pass",
        ] {
            assert!(weak_reason(check(8, bad)).contains("email"), "{bad}");
        }
    }

    #[test]
    fn a_long_passphrase_passes() {
        assert!(check(15, "correct horse battery staple").is_ok());
    }
}
