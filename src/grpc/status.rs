//! The one place where a domain error becomes a gRPC status, with the
//! `google.rpc.ErrorInfo` (domain `warden.v1`) every error carries and the
//! `BadRequest` or `RetryInfo` details some carry.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::error::{Error, FieldViolation};

pub const ERROR_DOMAIN: &str = "warden.v1";

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let (code, reason) = code_and_reason(&err);
        let mut details =
            ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::<String, String>::new());
        let message = match &err {
            Error::InvalidArgument(violations) => {
                add_violations(&mut details, violations);
                err.to_string()
            }
            Error::WeakPassword(violation) => {
                add_violations(&mut details, std::slice::from_ref(violation));
                err.to_string()
            }
            Error::RateLimited { retry_after } | Error::Overloaded { retry_after } => {
                details.set_retry_info(Some(*retry_after));
                err.to_string()
            }
            Error::DatabaseUnavailable { cause, .. } => {
                tracing::warn!(error = chain(cause), "database unavailable");
                err.to_string()
            }
            // The cause goes to the log, never to the client.
            Error::Conflict(cause) => {
                tracing::error!(error = chain(cause), "internal error");
                "Internal error".to_owned()
            }
            Error::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "internal error");
                "Internal error".to_owned()
            }
            _ => err.to_string(),
        };
        Status::with_error_details(code, message, details)
    }
}

/// The `ErrorInfo` reason of an error, e.g. `INVALID_CREDENTIALS`.
pub fn reason(err: &Error) -> &'static str {
    code_and_reason(err).1
}

fn code_and_reason(err: &Error) -> (Code, &'static str) {
    match err {
        Error::InvalidArgument(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
        Error::WeakPassword(_) => (Code::InvalidArgument, "WEAK_PASSWORD"),
        Error::EmailTaken => (Code::AlreadyExists, "EMAIL_TAKEN"),
        Error::InvalidCredentials => (Code::Unauthenticated, "INVALID_CREDENTIALS"),
        Error::AccountPending => (Code::PermissionDenied, "ACCOUNT_PENDING"),
        Error::AccountDisabled => (Code::PermissionDenied, "ACCOUNT_DISABLED"),
        Error::TokenMissing => (Code::Unauthenticated, "TOKEN_MISSING"),
        Error::TokenInvalid => (Code::Unauthenticated, "TOKEN_INVALID"),
        Error::TokenExpired => (Code::Unauthenticated, "TOKEN_EXPIRED"),
        Error::SessionRevoked => (Code::Unauthenticated, "SESSION_REVOKED"),
        Error::RefreshTokenInvalid => (Code::Unauthenticated, "REFRESH_TOKEN_INVALID"),
        Error::RefreshTokenReused => (Code::Unauthenticated, "REFRESH_TOKEN_REUSED"),
        Error::AdminRequired => (Code::PermissionDenied, "ADMIN_REQUIRED"),
        Error::UserNotFound => (Code::NotFound, "USER_NOT_FOUND"),
        Error::SessionNotFound => (Code::NotFound, "SESSION_NOT_FOUND"),
        Error::LastAdmin => (Code::FailedPrecondition, "LAST_ADMIN"),
        Error::WrongPassword => (Code::PermissionDenied, "WRONG_PASSWORD"),
        Error::RateLimited { .. } => (Code::ResourceExhausted, "RATE_LIMITED"),
        Error::Overloaded { .. } => (Code::ResourceExhausted, "OVERLOADED"),
        Error::DatabaseUnavailable { .. } => (Code::Unavailable, "DATABASE_UNAVAILABLE"),
        // Organizations.
        Error::OrganizationNotFound => (Code::NotFound, "ORGANIZATION_NOT_FOUND"),
        Error::OrgRoleRequired => (Code::PermissionDenied, "ORG_ROLE_REQUIRED"),
        Error::MemberNotFound => (Code::NotFound, "MEMBER_NOT_FOUND"),
        Error::InvitationNotFound => (Code::NotFound, "INVITATION_NOT_FOUND"),
        Error::AlreadyMember => (Code::AlreadyExists, "ALREADY_MEMBER"),
        Error::LastOwner => (Code::FailedPrecondition, "LAST_OWNER"),
        Error::InvitationInvalid => (Code::FailedPrecondition, "INVITATION_INVALID"),
        // End of Organizations.
        Error::Conflict(_) | Error::Unexpected(_) => (Code::Internal, "INTERNAL"),

        // Email.
        Error::EmailTokenInvalid => (Code::FailedPrecondition, "EMAIL_TOKEN_INVALID"),
        Error::EmailAlreadyVerified => (Code::FailedPrecondition, "EMAIL_ALREADY_VERIFIED"),
        Error::EmailNotVerified => (Code::FailedPrecondition, "EMAIL_NOT_VERIFIED"),
        Error::MailNotConfigured => (Code::FailedPrecondition, "MAIL_NOT_CONFIGURED"),
    }
}

/// An error and its causes, `: `-separated, for the log.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn add_violations(details: &mut ErrorDetails, violations: &[FieldViolation]) {
    for v in violations {
        details.add_bad_request_violation(v.field, &v.description);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_carries_error_info_in_the_warden_domain() {
        let status = Status::from(Error::InvalidCredentials);
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "Incorrect email or password");
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "INVALID_CREDENTIALS");
        assert_eq!(info.domain, "warden.v1");
    }

    #[test]
    fn invalid_arguments_carry_field_violations() {
        let status = Status::from(Error::InvalidArgument(vec![
            FieldViolation::new("email", "must not be empty"),
            FieldViolation::new("display_name", "must be at most 100 characters"),
        ]));
        assert_eq!(status.code(), Code::InvalidArgument);
        let bad = status.get_details_bad_request().unwrap();
        let fields: Vec<_> = bad
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["email", "display_name"]);
        assert!(status.message().contains("email must not be empty"));
    }

    #[test]
    fn internal_causes_stay_out_of_the_message() {
        let status = Status::from(Error::Unexpected(anyhow::anyhow!("secret-ish detail")));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "Internal error");
    }

    #[test]
    fn rate_limits_carry_retry_info() {
        let status = Status::from(Error::RateLimited {
            retry_after: std::time::Duration::from_secs(30),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn email_errors_are_failed_preconditions_with_their_reasons() {
        for (err, reason) in [
            (Error::EmailTokenInvalid, "EMAIL_TOKEN_INVALID"),
            (Error::EmailAlreadyVerified, "EMAIL_ALREADY_VERIFIED"),
            (Error::EmailNotVerified, "EMAIL_NOT_VERIFIED"),
            (Error::MailNotConfigured, "MAIL_NOT_CONFIGURED"),
        ] {
            let status = Status::from(err);
            assert_eq!(status.code(), Code::FailedPrecondition);
            assert_eq!(status.get_details_error_info().unwrap().reason, reason);
        }
        assert_eq!(
            Status::from(Error::EmailNotVerified).message(),
            "Email not verified"
        );
    }

    #[test]
    fn overload_is_told_apart_from_a_lockout_and_carries_retry_info() {
        let status = Status::from(Error::Overloaded {
            retry_after: std::time::Duration::from_secs(1),
        });
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(
            status.get_details_error_info().unwrap().reason,
            "OVERLOADED"
        );
        let retry = status.get_details_retry_info().unwrap();
        assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(1)));
    }
}
