//! Request fields that were checked once, on construction (API.md, "Input
//! rules"). Holding one of these types means the value is valid.

use uuid::Uuid;

use crate::domain::error::FieldViolation;

/// The longest address SMTP can deliver to (RFC 5321 path limit).
const EMAIL_MAX_BYTES: usize = 254;
const DISPLAY_NAME_MAX_CHARS: usize = 100;

/// A syntactically valid email address, trimmed and lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Syntax is the WHATWG HTML "valid e-mail address" (ASCII only); the
    /// address is normalised before it is checked, stored or compared.
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        if trimmed.len() > EMAIL_MAX_BYTES {
            return Err(FieldViolation::new(
                field,
                format!("must be at most {EMAIL_MAX_BYTES} bytes"),
            ));
        }
        if !is_whatwg_email(trimmed) {
            return Err(FieldViolation::new(field, "is not a valid email address"));
        }
        Ok(Self(trimmed.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the `@`.
    pub fn local_part(&self) -> &str {
        self.0.split('@').next().unwrap_or_default()
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `1*( atext / "." ) "@" label *( "." label )`, where a label is 1 to 63
/// letters, digits or hyphens, not starting or ending with a hyphen.
fn is_whatwg_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".!#$%&'*+/=?^_`{|}~-".contains(&b));
    let domain_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    });
    local_ok && domain_ok
}

/// An optional human name: at most 100 characters, no control characters,
/// no bidi overrides or isolates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DisplayName(String);

impl DisplayName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        check_text(field, raw, DISPLAY_NAME_MAX_CHARS)?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A bounded, printable piece of text. Bidi overrides and isolates are
/// refused like control characters: shown to an admin or in a session
/// list, they reorder what follows them, so "Trojan Source" text (CVE-2021-42574)
/// could make one name read as another.
fn check_text(field: &'static str, raw: &str, max_chars: usize) -> Result<(), FieldViolation> {
    if raw.chars().count() > max_chars {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(FieldViolation::new(
            field,
            "must not contain control characters",
        ));
    }
    if raw.chars().any(is_bidi_override_or_isolate) {
        return Err(FieldViolation::new(
            field,
            "must not contain bidi overrides or isolates",
        ));
    }
    Ok(())
}

/// LRE, RLE, PDF, LRO, RLO (U+202A–U+202E) and LRI, RLI, FSI, PDI
/// (U+2066–U+2069), the explicit formatting characters of Unicode's
/// bidirectional algorithm (UAX #9) that API.md names. The marks (LRM, RLM)
/// stay allowed: they change no order beyond their neighbours, and
/// right-to-left names need them.
fn is_bidi_override_or_isolate(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// A UUID given as text, for ids in requests.
pub fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, FieldViolation> {
    Uuid::try_parse(raw.trim()).map_err(|_| FieldViolation::new(field, "must be a UUID"))
}

/// The longest one-time token (email, invitation) a request may carry.
pub const TOKEN_MAX_BYTES: usize = 256;

/// A one-time token as a request carries it: non-empty, at most 256 bytes.
pub fn one_time_token<'a>(field: &'static str, raw: &'a str) -> Result<&'a str, FieldViolation> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if token.len() > TOKEN_MAX_BYTES {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {TOKEN_MAX_BYTES} bytes"),
        ));
    }
    Ok(token)
}

/// What a client says about the device it logs in from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub name: String,
    pub kind: String,
}

impl Device {
    pub const UNKNOWN_KIND: &'static str = "unknown";

    pub fn parse(id: &str, name: &str, kind: &str) -> Result<Self, Vec<FieldViolation>> {
        let violations: Vec<_> = [
            check_text("device.device_id", id, 128),
            check_text("device.device_name", name, 100),
            check_text("device.device_type", kind, 32),
        ]
        .into_iter()
        .filter_map(Result::err)
        .collect();
        if !violations.is_empty() {
            return Err(violations);
        }
        let kind = kind.trim();
        Ok(Self {
            id: id.to_owned(),
            name: name.to_owned(),
            kind: if kind.is_empty() {
                Self::UNKNOWN_KIND.to_owned()
            } else {
                kind.to_owned()
            },
        })
    }
}

impl Default for Device {
    fn default() -> Self {
        Self {
            id: String::new(),
            name: String::new(),
            kind: Self::UNKNOWN_KIND.to_owned(),
        }
    }
}

const ORGANIZATION_NAME_MAX_CHARS: usize = 100;
/// Distinct application roles per member at most.
pub const MAX_ROLES: usize = 32;
const ROLE_MAX_BYTES: usize = 63;
/// One-time tokens (invitations): ours are 43 characters.
const ONE_TIME_TOKEN_MAX_BYTES: usize = 256;

/// An organisation's name: 1 to 100 characters after trimming, printable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganizationName(String);

impl OrganizationName {
    pub fn parse(field: &'static str, raw: &str) -> Result<Self, FieldViolation> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(FieldViolation::new(field, "must not be empty"));
        }
        check_text(field, trimmed, ORGANIZATION_NAME_MAX_CHARS)?;
        Ok(Self(trimmed.to_owned()))
    }

    /// A name made from other text (a display name, an email's local part),
    /// cut to the length a name may have.
    pub fn fallback(text: &str) -> Option<Self> {
        let cut: String = text
            .trim()
            .chars()
            .take(ORGANIZATION_NAME_MAX_CHARS)
            .collect();
        Self::parse("organization_name", &cut).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// Application roles: each `^[a-z][a-z0-9_.:-]{0,62}$`, at most 32 distinct
/// ones; given twice, kept once. Sorted. Anything else is refused, never
/// trimmed or lower-cased silently.
pub fn parse_roles(field: &'static str, raw: &[String]) -> Result<Vec<String>, FieldViolation> {
    for role in raw {
        if !is_role(role) {
            return Err(FieldViolation::new(
                field,
                "each must match ^[a-z][a-z0-9_.:-]{0,62}$",
            ));
        }
    }
    let mut roles = raw.to_vec();
    roles.sort();
    roles.dedup();
    if roles.len() > MAX_ROLES {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {MAX_ROLES} distinct roles"),
        ));
    }
    Ok(roles)
}

fn is_role(role: &str) -> bool {
    let bytes = role.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= ROLE_MAX_BYTES
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(b))
}

/// A one-time token as it arrives (invitation): non-empty, at most 256
/// bytes. Never echoed.
pub fn check_token(field: &'static str, raw: &str) -> Result<(), FieldViolation> {
    if raw.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    if raw.len() > ONE_TIME_TOKEN_MAX_BYTES {
        return Err(FieldViolation::new(
            field,
            format!("must be at most {ONE_TIME_TOKEN_MAX_BYTES} bytes"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_time_tokens_are_non_empty_and_at_most_256_bytes() {
        assert_eq!(super::one_time_token("token", " abc ").unwrap(), "abc");
        assert_eq!(
            super::one_time_token("token", "").unwrap_err().field,
            "token"
        );
        assert!(super::one_time_token("token", "   ").is_err());
        assert!(super::one_time_token("token", &"a".repeat(256)).is_ok());
        assert!(super::one_time_token("token", &"a".repeat(257)).is_err());
    }

    use super::*;

    #[test]
    fn an_email_is_trimmed_and_lower_cased() {
        let email = Email::parse("email", "  Alice.Smith+tag@Example.COM \t").unwrap();
        assert_eq!(email.as_str(), "alice.smith+tag@example.com");
        assert_eq!(email.local_part(), "alice.smith+tag");
    }

    #[test]
    fn whatwg_email_syntax_is_enforced() {
        for good in [
            "a@b",
            "x@localhost",
            "first.last@sub.example.org",
            "o'neil@x.io",
            "a-b@c-d.e",
        ] {
            assert!(
                Email::parse("email", good).is_ok(),
                "{good} should be valid"
            );
        }
        for bad in [
            "plain",
            "@example.com",
            "a@",
            "a@@b.c",
            "a b@c.d",
            "a@-b.c",
            "a@b-.c",
            "a@b..c",
            "a@.b",
            "ä@b.c",
            "a@b.c.",
            "\"quoted\"@b.c",
        ] {
            assert!(
                Email::parse("email", bad).is_err(),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn an_empty_or_whitespace_email_is_rejected_as_empty() {
        for raw in ["", "   ", "\t\n"] {
            let err = Email::parse("email", raw).unwrap_err();
            assert_eq!(err.field, "email");
            assert_eq!(err.description, "must not be empty");
        }
    }

    #[test]
    fn an_email_over_254_bytes_is_rejected() {
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(186));
        assert_eq!(long.len(), 255);
        assert!(
            Email::parse("email", &long)
                .unwrap_err()
                .description
                .contains("254")
        );
        let label = "b".repeat(60);
        let ok = format!(
            "{}@{label}.{label}.{label}.{}",
            "a".repeat(64),
            "c".repeat(4)
        );
        assert!(ok.len() <= 254);
        assert!(Email::parse("email", &ok).is_ok());
    }

    #[test]
    fn a_display_name_is_bounded_and_printable() {
        assert!(DisplayName::parse("display_name", "").is_ok());
        assert!(DisplayName::parse("display_name", &"é".repeat(100)).is_ok());
        assert!(DisplayName::parse("display_name", &"é".repeat(101)).is_err());
        assert!(DisplayName::parse("display_name", "tab\there").is_err());
        assert!(DisplayName::parse("display_name", "bell\u{7}").is_err());
    }

    #[test]
    fn a_display_name_refuses_bidi_overrides_and_isolates() {
        for c in ('\u{202A}'..='\u{202E}').chain('\u{2066}'..='\u{2069}') {
            let err = DisplayName::parse("display_name", &format!("admin{c}txt.exe")).unwrap_err();
            assert_eq!(err.field, "display_name");
            assert!(err.description.contains("bidi"), "{}", err.description);
        }
    }

    #[test]
    fn a_display_name_keeps_right_to_left_text_and_its_marks() {
        // Hebrew, Arabic, the marks RLM and LRM, and the code points just
        // outside the two refused ranges.
        for ok in [
            "שלום",
            "مرحبا",
            "Ada\u{200F} Lovelace",
            "a\u{200E}b",
            "\u{2029}",
            "\u{202F}",
            "\u{2065}",
            "\u{206A}",
        ] {
            assert!(DisplayName::parse("display_name", ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn device_fields_refuse_bidi_overrides_and_isolates() {
        let violations = Device::parse("id\u{202E}", "phone\u{2066}", "ios\u{2069}").unwrap_err();
        let fields: Vec<_> = violations.iter().map(|v| v.field).collect();
        assert_eq!(
            fields,
            [
                "device.device_id",
                "device.device_name",
                "device.device_type"
            ]
        );
    }

    #[test]
    fn a_device_without_a_type_is_unknown() {
        assert_eq!(Device::parse("id", "name", "").unwrap().kind, "unknown");
        assert_eq!(Device::parse("id", "name", "ios").unwrap().kind, "ios");
        assert_eq!(
            Device::parse(&"x".repeat(129), "", "").unwrap_err().len(),
            1
        );
    }

    #[test]
    fn ids_must_be_uuids() {
        assert!(parse_id("user_id", "4b0a5f5e-8b1c-4e1e-9a59-6b6f1e0f9c11").is_ok());
        assert!(parse_id("user_id", "42").is_err());
        assert!(parse_id("user_id", "").is_err());
    }

    #[test]
    fn organization_names_are_trimmed_bounded_and_printable() {
        assert_eq!(
            OrganizationName::parse("name", "  Acme  ")
                .unwrap()
                .as_str(),
            "Acme"
        );
        for bad in ["", "   ", "a\u{0007}b", "a\u{202E}b", &"x".repeat(101)] {
            let v = OrganizationName::parse("name", bad).unwrap_err();
            assert_eq!(v.field, "name", "{bad:?}");
        }
        assert!(OrganizationName::parse("name", &"é".repeat(100)).is_ok());
        assert_eq!(
            OrganizationName::fallback(&"y".repeat(150))
                .unwrap()
                .as_str(),
            "y".repeat(100)
        );
    }

    #[test]
    fn roles_are_checked_deduplicated_and_sorted_never_trimmed() {
        let raw = |r: &[&str]| r.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            parse_roles("roles", &raw(&["agent", "billing:read", "agent"])).unwrap(),
            ["agent", "billing:read"]
        );
        for bad in [
            "", "Agent", " agent", "agent ", "1agent", "a b", "agent!", "é",
        ] {
            assert!(parse_roles("roles", &raw(&[bad])).is_err(), "{bad:?}");
        }
        assert!(parse_roles("roles", &raw(&[&format!("a{}", "b".repeat(62))])).is_ok());
        assert!(parse_roles("roles", &raw(&[&format!("a{}", "b".repeat(63))])).is_err());
        let many: Vec<String> = (0..33).map(|i| format!("r{i}")).collect();
        assert!(parse_roles("roles", &many).is_err());
        let mut repeated: Vec<String> = (0..32).map(|i| format!("r{i}")).collect();
        repeated.extend(repeated.clone());
        assert_eq!(parse_roles("roles", &repeated).unwrap().len(), 32);
    }

    #[test]
    fn one_time_tokens_are_non_empty_and_bounded() {
        assert!(check_token("invitation_token", "").is_err());
        assert!(check_token("invitation_token", &"a".repeat(256)).is_ok());
        assert!(check_token("invitation_token", &"a".repeat(257)).is_err());
    }
}
