//! Delivery over SMTP (RFC 5321) with lettre: the relay of `WARDEN_SMTP_URL`
//! in lettre's URL form (`smtp://[user:pass@]host[:port]`, `?tls=required`
//! for STARTTLS or `?tls=opportunistic`, `smtps://` for implicit TLS),
//! rustls with the Mozilla roots, plus the PEM bundle of
//! `WARDEN_SMTP_CA_FILE` for a relay with a private CA. The outbox's sender
//! (`domain::email::sender`) hands each mail to `Mailer::deliver`.

use std::{path::Path, str::FromStr as _, time::Duration};

use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Body, Mailbox, header::ContentType},
    transport::smtp::client::{Certificate, Tls, TlsParameters},
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    domain::{
        email::sender::{Deliver, DeliveryError},
        types::OutgoingMail,
    },
    store::BoxFuture,
};

/// Each SMTP command's deadline (connect, greeting, each reply).
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// A checked `WARDEN_SMTP_URL` (with its credentials: never in `Debug`) and
/// the extra roots to trust.
#[derive(Clone)]
pub struct SmtpSettings {
    url: SecretString,
    ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for SmtpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSettings")
            .field("url", &"[redacted]")
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .finish()
    }
}

impl SmtpSettings {
    /// Checks the URL (and reads the CA file) as the transport will use
    /// them, so that a bad setting stops the process at start. Messages
    /// never quote the URL: it may hold a password.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> Result<Self, String> {
        let ca_pem = match ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                format!(
                    "--smtp-ca-file (WARDEN_SMTP_CA_FILE): cannot read {}: {e}",
                    path.display()
                )
            })?),
            None => None,
        };
        let settings = Self {
            url: SecretString::from(url.to_owned()),
            ca_pem,
        };
        settings.transport()?;
        Ok(settings)
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
        let url = self.url.expose_secret();
        let bad = |what: &str| format!("--smtp-url (WARDEN_SMTP_URL): {what}");
        let parsed = url::Url::parse(url).map_err(|e| bad(&format!("not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "smtp" | "smtps") {
            return Err(bad("must start with smtp:// or smtps://"));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| bad(&format!("not a relay lettre can use ({e})")))?;
        if let Some(pem) = &self.ca_pem {
            let host = parsed.host_str().unwrap_or_default().to_owned();
            let mode = parsed
                .query_pairs()
                .find(|(k, _)| k == "tls")
                .map(|(_, v)| v.into_owned());
            let bad_ca = |what: String| format!("--smtp-ca-file (WARDEN_SMTP_CA_FILE): {what}");
            let certificate = Certificate::from_pem(pem)
                .map_err(|e| bad_ca(format!("not a PEM certificate bundle ({e})")))?;
            let parameters = TlsParameters::builder(host)
                .add_root_certificate(certificate)
                .build_rustls()
                .map_err(|e| bad_ca(e.to_string()))?;
            let tls = match (parsed.scheme(), mode.as_deref()) {
                ("smtps", _) => Tls::Wrapper(parameters),
                (_, Some("required")) => Tls::Required(parameters),
                (_, Some("opportunistic")) => Tls::Opportunistic(parameters),
                _ => {
                    return Err(bad_ca(
                        "needs TLS: an smtps:// URL, or ?tls=required or ?tls=opportunistic".into(),
                    ));
                }
            };
            builder = builder.tls(tls);
        }
        Ok(builder.timeout(Some(SMTP_TIMEOUT)).build())
    }
}

/// `WARDEN_MAIL_FROM`: an address, with or without a display name
/// (`Warden <noreply@example.com>`).
pub fn parse_from(from: &str) -> Result<Mailbox, String> {
    Mailbox::from_str(from.trim())
        .map_err(|e| format!("--mail-from (WARDEN_MAIL_FROM): not a mail address ({e})"))
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(settings: &SmtpSettings, from: Mailbox) -> anyhow::Result<Self> {
        let transport = settings.transport().map_err(anyhow::Error::msg)?;
        Ok(Self { transport, from })
    }
}

/// The message of an outbox row: plain text (lettre picks 7bit for short
/// ASCII lines, quoted-printable when a long link needs it), a
/// `Date`, a `Message-ID` that stays the same across attempts (a receiver
/// can drop a copy), and headers that lettre encodes: a UTF-8 subject as an
/// RFC 2047 word, a display name quoted and encoded, so no text of a user's
/// can start a header of its own.
pub fn message(from: &Mailbox, mail: &OutgoingMail) -> Result<Message, String> {
    let address = Address::from_str(&mail.to).map_err(|e| format!("bad recipient: {e}"))?;
    // Input rules keep control characters out of display names, but a name
    // with a line break must not even reach lettre (its header encoder
    // refuses it, and would fail the whole message).
    let name: String = mail
        .to_name
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let name = Some(name.trim().to_owned()).filter(|n| !n.is_empty());
    let domain = from.email.domain().to_owned();
    let body = Body::new(mail.body.clone());
    Message::builder()
        .from(from.clone())
        .to(Mailbox::new(name, address))
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{}@{domain}>", mail.id)))
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("cannot build the message: {e}"))
}

impl Deliver for Mailer {
    fn deliver<'a>(&'a self, mail: &'a OutgoingMail) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let message = message(&self.from, mail).map_err(DeliveryError)?;
            self.transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| DeliveryError(e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::domain::types::MailKind;

    fn mail(to_name: &str, subject: &str) -> OutgoingMail {
        OutgoingMail {
            id: Uuid::from_u128(42),
            kind: MailKind::VerifyEmail,
            to: "ada@example.com".into(),
            to_name: to_name.into(),
            subject: subject.into(),
            body: "Your token:\r\n\r\nabcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFG\r\n".into(),
            created_at: Utc::now(),
            attempts: 0,
        }
    }

    fn formatted(from: &str, mail: &OutgoingMail) -> String {
        let from = parse_from(from).unwrap();
        String::from_utf8(message(&from, mail).unwrap().formatted()).unwrap()
    }

    /// The header lines, folded ones joined.
    fn headers(text: &str) -> Vec<String> {
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        let mut headers: Vec<String> = Vec::new();
        for line in head.split("\r\n") {
            match headers.last_mut() {
                Some(last) if line.starts_with(' ') || line.starts_with('\t') => {
                    last.push_str(line)
                }
                _ => headers.push(line.to_owned()),
            }
        }
        headers
    }

    #[test]
    fn a_mail_has_date_message_id_from_to_and_a_plain_7bit_body() {
        let text = formatted("Warden <noreply@auth.example.com>", &mail("Ada", "Verify"));
        let head = headers(&text);
        let has = |line: &str| head.iter().any(|h| h == line);
        assert!(head.iter().any(|h| h.starts_with("Date: ")), "{text}");
        assert!(
            has("Message-ID: <00000000-0000-0000-0000-00000000002a@auth.example.com>"),
            "{text}"
        );
        assert!(has("From: Warden <noreply@auth.example.com>"), "{text}");
        assert!(has("To: Ada <ada@example.com>"), "{text}");
        assert!(has("Content-Type: text/plain; charset=utf-8"), "{text}");
        assert!(has("Content-Transfer-Encoding: 7bit"), "{text}");
        assert!(text.contains("\r\nabcdefghijklmnopqrstuvwxyz0123456789-_ABCDEFG\r\n"));
    }

    #[test]
    fn a_display_name_cannot_inject_a_header() {
        for name in [
            "Eve\r\nBcc: victim@example.com",
            "Eve\nBcc: victim@example.com",
            "\"Eve\" <eve@evil.example>, victim@example.com",
        ] {
            let text = formatted("warden@example.com", &mail(name, "Hello"));
            for header in headers(&text) {
                assert!(!header.starts_with("Bcc:"), "{name:?} -> {text}");
                assert!(
                    !header.to_ascii_lowercase().starts_with("cc:"),
                    "{name:?} -> {text}"
                );
            }
            let to: Vec<_> = headers(&text)
                .into_iter()
                .filter(|h| h.starts_with("To:"))
                .collect();
            assert_eq!(to.len(), 1, "{text}");
            assert!(to[0].ends_with("<ada@example.com>"), "{text}");
        }
    }

    #[test]
    fn a_utf8_subject_and_names_are_encoded_words() {
        let text = formatted(
            "Wärden Ärztekammer <noreply@example.com>",
            &mail("Zoë", "Bestätigen Sie Ihre E-Mail-Adresse"),
        );
        let (head, _) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.is_ascii(), "{head}");
        assert!(head.contains("Subject: =?utf-8?"), "{head}");
    }

    #[test]
    fn bad_relay_urls_are_refused_without_quoting_them() {
        for url in [
            "http://user:hunter2secret@relay.example.com",
            "smtp://user:hunter2secret@relay.example.com?tls=sometimes",
            "not a url hunter2secret",
        ] {
            let err = SmtpSettings::parse(url, None).unwrap_err();
            assert!(err.contains("WARDEN_SMTP_URL"), "{err}");
            assert!(!err.contains("hunter2secret"), "{err}");
        }
        for url in [
            "smtp://127.0.0.1:2525",
            "smtp://user:pass@relay.example.com?tls=required",
            "smtp://relay.example.com:587?tls=opportunistic",
            "smtps://user:pass@relay.example.com",
        ] {
            let settings = SmtpSettings::parse(url, None).unwrap();
            assert!(!format!("{settings:?}").contains("pass"));
        }
    }

    #[test]
    fn the_sender_address_may_carry_a_display_name() {
        assert!(parse_from("warden@localhost").is_ok());
        assert!(parse_from("Warden <noreply@example.com>").is_ok());
        assert!(
            parse_from("not an address")
                .unwrap_err()
                .contains("WARDEN_MAIL_FROM")
        );
    }
}
