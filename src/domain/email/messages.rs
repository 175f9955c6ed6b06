//! The texts of warden's mails: plain text, short ASCII lines (they travel
//! as 7bit; only a long link makes the body quoted-printable, which every
//! mail reader decodes), no HTML.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use uuid::Uuid;

use super::EmailSettings;
use crate::domain::{
    rules::email::link,
    types::{MailKind, OutgoingMail},
};

/// The recipient of a mail: the address, and the name for the `To` header.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub email: &'a str,
    pub name: &'a str,
}

fn mail(
    kind: MailKind,
    to: Recipient<'_>,
    subject: &str,
    body: String,
    now: DateTime<Utc>,
) -> OutgoingMail {
    OutgoingMail {
        id: Uuid::now_v7(),
        kind,
        to: to.email.to_owned(),
        to_name: to.name.to_owned(),
        subject: subject.to_owned(),
        body,
        created_at: now,
        attempts: 0,
    }
}

fn lifetime(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl EmailSettings {
    /// "Verify your email", to the address being verified.
    pub fn verification_mail(
        &self,
        to: Recipient<'_>,
        token: &SecretString,
        now: DateTime<Utc>,
    ) -> OutgoingMail {
        let follow = link(self.links.verify_email.as_deref(), token.expose_secret());
        let body = format!(
            "Please confirm that this is your address:\r\n\
             {email}\r\n\
             \r\n\
             {how}\r\n\
             \r\n\
             {follow}\r\n\
             \r\n\
             It works once, for {ttl}.\r\n\
             If you did not ask for this, ignore this mail.\r\n",
            email = to.email,
            how = if self.links.verify_email.is_some() {
                "Open this link to verify it:"
            } else {
                "Your verification token:"
            },
            ttl = lifetime(self.verification_ttl),
        );
        mail(MailKind::VerifyEmail, to, "Verify your email", body, now)
    }

    /// "Your email was changed", to the old address: no token, so whoever
    /// lost control of the account hears of it.
    pub fn email_changed_notice(
        &self,
        old: Recipient<'_>,
        new_email: &str,
        now: DateTime<Utc>,
    ) -> OutgoingMail {
        let body = format!(
            "The email address of your account {old}\r\n\
             was changed to:\r\n\
             {new_email}\r\n\
             \r\n\
             If you did not do this, contact your administrator at once.\r\n",
            old = old.email,
        );
        mail(
            MailKind::EmailChanged,
            old,
            "Your email was changed",
            body,
            now,
        )
    }

    /// "Reset your password", to the account's address.
    pub fn reset_mail(
        &self,
        to: Recipient<'_>,
        token: &SecretString,
        now: DateTime<Utc>,
    ) -> OutgoingMail {
        let follow = link(self.links.reset_password.as_deref(), token.expose_secret());
        let body = format!(
            "Someone asked to reset the password of the account\r\n\
             {email}\r\n\
             \r\n\
             {how}\r\n\
             \r\n\
             {follow}\r\n\
             \r\n\
             It works once, for {ttl}, and signs out every session.\r\n\
             If you did not ask for this, ignore this mail:\r\n\
             your password stays as it is.\r\n",
            email = to.email,
            how = if self.links.reset_password.is_some() {
                "Open this link to choose a new password:"
            } else {
                "Your password reset token:"
            },
            ttl = lifetime(self.reset_ttl),
        );
        mail(
            MailKind::ResetPassword,
            to,
            "Reset your password",
            body,
            now,
        )
    }

    /// "Your password was changed": no token.
    pub fn password_changed_notice(&self, to: Recipient<'_>, now: DateTime<Utc>) -> OutgoingMail {
        let body = format!(
            "The password of the account {email} was changed.\r\n\
             \r\n\
             If you did not do this, reset your password\r\n\
             or contact your administrator at once.\r\n",
            email = to.email,
        );
        mail(
            MailKind::PasswordChanged,
            to,
            "Your password was changed",
            body,
            now,
        )
    }

    /// "You are invited", with the invitation token (WARDEN_INVITATION_URL):
    /// for the organisations' CreateInvitation to queue in its transaction.
    pub fn invitation_mail(
        &self,
        to: Recipient<'_>,
        organization_name: &str,
        token: &SecretString,
        ttl: std::time::Duration,
        now: DateTime<Utc>,
    ) -> OutgoingMail {
        let follow = link(self.links.invitation.as_deref(), token.expose_secret());
        let body = format!(
            "You are invited to join {organization_name}.\r\n\
             \r\n\
             {how}\r\n\
             \r\n\
             {follow}\r\n\
             \r\n\
             It works once, for {ttl}, for the account of\r\n\
             {email}\r\n",
            email = to.email,
            how = if self.links.invitation.is_some() {
                "Open this link to accept:"
            } else {
                "Your invitation token:"
            },
            ttl = lifetime(ttl),
        );
        mail(MailKind::Invitation, to, "You are invited", body, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::email::LinkTemplates;

    const TOKEN: &str = "dG9rZW4tdG9rZW4tdG9rZW4tdG9rZW4tdG9rZW4tdG9r";

    fn to() -> Recipient<'static> {
        Recipient {
            email: "ada@example.com",
            name: "Ada",
        }
    }

    fn secret() -> SecretString {
        SecretString::from(TOKEN)
    }

    #[test]
    fn token_mails_carry_the_link_from_the_template_or_the_bare_token() {
        let now = Utc::now();
        let bare = EmailSettings::default();
        let mail = bare.verification_mail(to(), &secret(), now);
        assert_eq!(mail.kind, MailKind::VerifyEmail);
        assert!(
            mail.body.contains(&format!("\r\n{TOKEN}\r\n")),
            "{}",
            mail.body
        );

        let linked = EmailSettings {
            links: LinkTemplates {
                verify_email: Some("https://app.example.com/verify#{token}".into()),
                reset_password: Some("https://app.example.com/reset?t={token}".into()),
                invitation: Some("https://app.example.com/join/{token}".into()),
            },
            ..EmailSettings::default()
        };
        let verify = linked.verification_mail(to(), &secret(), now);
        assert!(
            verify
                .body
                .contains(&format!("https://app.example.com/verify#{TOKEN}"))
        );
        let reset = linked.reset_mail(to(), &secret(), now);
        assert!(
            reset
                .body
                .contains(&format!("https://app.example.com/reset?t={TOKEN}"))
        );
        let invite = linked.invitation_mail(
            to(),
            "Acme",
            &secret(),
            std::time::Duration::from_secs(3600),
            now,
        );
        assert!(
            invite
                .body
                .contains(&format!("https://app.example.com/join/{TOKEN}"))
        );
        assert_eq!(invite.kind, MailKind::Invitation);
    }

    #[test]
    fn notices_carry_no_token_and_every_body_is_short_ascii_lines() {
        let now = Utc::now();
        let settings = EmailSettings::default();
        let notices = [
            settings.email_changed_notice(to(), "new@example.com", now),
            settings.password_changed_notice(to(), now),
        ];
        for notice in &notices {
            assert!(!notice.body.contains(TOKEN));
        }
        let all = [
            settings.verification_mail(to(), &secret(), now),
            settings.reset_mail(to(), &secret(), now),
        ];
        for mail in notices.iter().chain(&all) {
            assert!(mail.body.is_ascii(), "{}", mail.body);
            assert!(mail.body.split("\r\n").all(|line| line.len() <= 998));
            assert!(!mail.body.replace("\r\n", "").contains('\n'));
        }
    }

    #[test]
    fn debug_of_a_mail_never_shows_its_body() {
        let mail = EmailSettings::default().reset_mail(to(), &secret(), Utc::now());
        assert!(!format!("{mail:?}").contains(TOKEN));
    }
}
