//! `TokenService::verify` on any text, and on real signed tokens whose
//! header, claims or signature were changed, replaced or signed again.
//!
//! It must never panic, and must say only TOKEN_INVALID or TOKEN_EXPIRED.
//! Every answer is checked against a reading of the token made here,
//! independently of warden and jsonwebtoken (base64, JSON, Ed25519
//! `verify_strict` with the harness's own keys):
//! - a token accepted is three canonical segments, signed by a key the
//!   service knows under that key's `kid`, and carries exactly the claims
//!   that were signed (`sub`, `sid`, `exp`), with `iss`, `aud` and the time
//!   window right;
//! - a token called expired was validly signed and is past `exp` + 5 s;
//! - a token whose header and claims are plain, well-formed and in their
//!   time window is accepted (so the checks do not refuse everything);
//! - the same token at the same moment gets the same answer again, whatever
//!   was verified in between.

#![no_main]

use arbitrary::Arbitrary;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _};
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use uuid::Uuid;
use warden::domain::{error::Error, tokens::VerifiedToken};
use warden_fuzz::{
    AUDIENCE, ISSUER, Now, SERVICE, Signer, TTL_SECONDS, b64, base_time, known_key, unb64,
};

const USER: Uuid = Uuid::from_u128(0x0196_0000_aaaa_7000_8000_0000_0000_0001);
const SESSION: Uuid = Uuid::from_u128(0x0196_0000_bbbb_7000_8000_0000_0000_0002);
const LEEWAY: i64 = 5;
/// README: tokens over 4 KiB are refused before any parsing.
const MAX_TOKEN_BYTES: usize = 4096;

#[derive(Arbitrary, Debug)]
enum Input {
    /// Any text at all.
    Raw { text: String, nows: [Now; 2] },
    /// A token the service issued (for a user and session of the fuzzer's
    /// choosing, `issued` seconds after the base time), then changed.
    Issued {
        user: u128,
        session: u128,
        issued: i32,
        edits: Vec<Edit>,
        nows: [Now; 2],
    },
    /// A header and claims built here from warden's own, changed field by
    /// field, and signed with a key of the fuzzer's choosing.
    Forged {
        signer: Signer,
        header: Vec<JsonEdit>,
        claims: Vec<JsonEdit>,
        edits: Vec<Edit>,
        nows: [Now; 2],
    },
}

/// A change to the text of a token, segment by segment.
#[derive(Arbitrary, Debug)]
enum Edit {
    SetText {
        segment: u8,
        text: String,
    },
    SetBytes {
        segment: u8,
        bytes: Vec<u8>,
    },
    FlipBits {
        segment: u8,
        at: u16,
        mask: u8,
    },
    Truncate {
        segment: u8,
        len: u16,
    },
    Json {
        part: Part,
        edit: JsonEdit,
    },
    /// Sign again what stands before the last dot.
    Resign(Signer),
    Swap(u8, u8),
    Drop(u8),
    Duplicate(u8),
    Insert {
        at: u16,
        text: String,
    },
    Wrap {
        before: Affix,
        after: Affix,
    },
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Part {
    Header,
    Claims,
}

#[derive(Arbitrary, Debug)]
enum JsonEdit {
    Set { key: Key, value: Json },
    Remove(Key),
}

#[derive(Arbitrary, Debug)]
enum Key {
    Alg,
    Typ,
    Kid,
    Cty,
    Jwk,
    Crit,
    Iss,
    Aud,
    Sub,
    Sid,
    Iat,
    Nbf,
    Exp,
    Jti,
    Other(String),
}

impl Key {
    fn name(&self) -> &str {
        match self {
            Key::Alg => "alg",
            Key::Typ => "typ",
            Key::Kid => "kid",
            Key::Cty => "cty",
            Key::Jwk => "jwk",
            Key::Crit => "crit",
            Key::Iss => "iss",
            Key::Aud => "aud",
            Key::Sub => "sub",
            Key::Sid => "sid",
            Key::Iat => "iat",
            Key::Nbf => "nbf",
            Key::Exp => "exp",
            Key::Jti => "jti",
            Key::Other(name) => name,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// Seconds after the base time, as a JSON integer.
    Time(i32),
    Float(f64),
    Text(String),
    Known(Known),
    List(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Strings that mean something to a verifier.
#[derive(Arbitrary, Debug)]
enum Known {
    Warden,
    EdDsa,
    Hs256,
    None,
    AtJwt,
    AtJwtUpper,
    ApplicationAtJwt,
    Jwt,
    Kid(Signer),
    User,
    Session,
    Uuid(u128),
    UuidSimple(u128),
    UuidBraced(u128),
    UuidUrn(u128),
}

impl Json {
    fn value(&self) -> Value {
        match self {
            Json::Null => Value::Null,
            Json::Bool(b) => json!(b),
            Json::Int(n) => json!(n),
            Json::Time(offset) => json!(base_time().timestamp() + i64::from(*offset)),
            Json::Float(f) => json!(f),
            Json::Text(s) => json!(s),
            Json::Known(k) => json!(match k {
                Known::Warden => ISSUER.to_owned(),
                Known::EdDsa => "EdDSA".to_owned(),
                Known::Hs256 => "HS256".to_owned(),
                Known::None => "none".to_owned(),
                Known::AtJwt => "at+jwt".to_owned(),
                Known::AtJwtUpper => "AT+JWT".to_owned(),
                Known::ApplicationAtJwt => "application/at+jwt".to_owned(),
                Known::Jwt => "JWT".to_owned(),
                Known::Kid(signer) => signer.key().kid.to_owned(),
                Known::User => USER.to_string(),
                Known::Session => SESSION.to_string(),
                Known::Uuid(n) => Uuid::from_u128(*n).to_string(),
                Known::UuidSimple(n) => Uuid::from_u128(*n).simple().to_string(),
                Known::UuidBraced(n) => Uuid::from_u128(*n).braced().to_string(),
                Known::UuidUrn(n) => Uuid::from_u128(*n).urn().to_string(),
            }),
            Json::List(items) => Value::Array(items.iter().map(Json::value).collect()),
            Json::Object(fields) => {
                Value::Object(fields.iter().map(|(k, v)| (k.clone(), v.value())).collect())
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Affix {
    Nothing,
    Space,
    Newline,
    Bearer,
    Padding,
    Nul,
    Text(String),
}

impl Affix {
    fn text(&self) -> &str {
        match self {
            Affix::Nothing => "",
            Affix::Space => " ",
            Affix::Newline => "\n",
            Affix::Bearer => "Bearer ",
            Affix::Padding => "==",
            Affix::Nul => "\0",
            Affix::Text(text) => text,
        }
    }
}

fn sign(signer: Signer, message: &str) -> String {
    b64(&signer.key().signing.sign(message.as_bytes()).to_bytes())
}

fn apply_json(object: &mut Map<String, Value>, edit: &JsonEdit) {
    match edit {
        JsonEdit::Set { key, value } => {
            object.insert(key.name().to_owned(), value.value());
        }
        JsonEdit::Remove(key) => {
            object.remove(key.name());
        }
    }
}

fn apply(token: String, edit: &Edit) -> String {
    let mut segments: Vec<String> = token.split('.').map(str::to_owned).collect();
    let pick = |i: u8, n: usize| usize::from(i) % n.max(1);
    let n = segments.len();
    match edit {
        Edit::SetText { segment, text } => segments[pick(*segment, n)] = text.clone(),
        Edit::SetBytes { segment, bytes } => segments[pick(*segment, n)] = b64(bytes),
        Edit::FlipBits { segment, at, mask } => {
            let s = &mut segments[pick(*segment, n)];
            match unb64(s) {
                Some(mut bytes) if !bytes.is_empty() => {
                    let i = usize::from(*at) % bytes.len();
                    bytes[i] ^= mask;
                    *s = b64(&bytes);
                }
                _ => {
                    let mut bytes = std::mem::take(s).into_bytes();
                    if !bytes.is_empty() {
                        let i = usize::from(*at) % bytes.len();
                        bytes[i] ^= mask & 0x3f;
                    }
                    *s = String::from_utf8_lossy(&bytes).into_owned();
                }
            }
        }
        Edit::Truncate { segment, len } => {
            let s = &mut segments[pick(*segment, n)];
            if let Some(mut bytes) = unb64(s) {
                bytes.truncate(usize::from(*len));
                *s = b64(&bytes);
            } else if let Some((i, _)) = s.char_indices().nth(usize::from(*len)) {
                s.truncate(i);
            }
        }
        Edit::Json { part, edit } => {
            let i = match part {
                Part::Header => 0,
                Part::Claims => 1,
            };
            if i < n {
                let mut object = unb64(&segments[i])
                    .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
                    .unwrap_or_default();
                apply_json(&mut object, edit);
                segments[i] = b64(&serde_json::to_vec(&object).expect("JSON"));
            }
        }
        Edit::Resign(signer) => {
            let joined = segments.join(".");
            return match joined.rsplit_once('.') {
                Some((message, _)) if n >= 3 => format!("{message}.{}", sign(*signer, message)),
                _ => format!("{joined}.{}", sign(*signer, &joined)),
            };
        }
        Edit::Swap(a, b) => segments.swap(pick(*a, n), pick(*b, n)),
        Edit::Drop(i) => {
            segments.remove(pick(*i, n));
        }
        Edit::Duplicate(i) => {
            let i = pick(*i, n);
            segments.insert(i, segments[i].clone());
        }
        Edit::Insert { at, text } => {
            let mut joined = segments.join(".");
            let at = usize::from(*at) % (joined.len() + 1);
            if joined.is_char_boundary(at) {
                joined.insert_str(at, text);
            }
            return joined;
        }
        Edit::Wrap { before, after } => {
            return format!("{}{}{}", before.text(), segments.join("."), after.text());
        }
    }
    segments.join(".")
}

/// The token as the harness reads it, when it is three canonical base64url
/// segments whose header names EdDSA, an access-token `typ` and a known
/// `kid`, and whose signature that key's `verify_strict` accepts.
struct Reading {
    header: Map<String, Value>,
    header_bytes: Vec<u8>,
    claims_bytes: Vec<u8>,
}

fn read(token: &str) -> Option<Reading> {
    let [h, p, s] = token.split('.').collect::<Vec<_>>()[..] else {
        return None;
    };
    let (header_bytes, claims_bytes, signature) = (unb64(h)?, unb64(p)?, unb64(s)?);
    let header: Map<String, Value> = serde_json::from_slice(&header_bytes).ok()?;
    if header.get("alg")? != "EdDSA" {
        return None;
    }
    let typ = header.get("typ")?.as_str()?;
    if !(typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")) {
        return None;
    }
    let key = known_key(header.get("kid")?.as_str()?)?;
    let signature = Signature::from_slice(&signature).ok()?;
    key.verifying()
        .verify_strict(format!("{h}.{p}").as_bytes(), &signature)
        .ok()?;
    Some(Reading {
        header,
        header_bytes,
        claims_bytes,
    })
}

fn int(claims: &Map<String, Value>, name: &str) -> Option<i64> {
    claims.get(name)?.as_i64()
}

fn text<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    claims.get(name)?.as_str()
}

/// The registered claims, read the way warden reads its own: other members
/// are skipped (at any depth), a registered one given twice is refused.
#[derive(Deserialize)]
struct Registered {
    iss: Option<Value>,
    aud: Option<Value>,
    sub: Option<Value>,
    sid: Option<Value>,
    iat: Option<Value>,
    nbf: Option<Value>,
    exp: Option<Value>,
    jti: Option<Value>,
}

fn registered(bytes: &[u8]) -> Option<Map<String, Value>> {
    let r: Registered = serde_json::from_slice(bytes).ok()?;
    let fields = [
        ("iss", r.iss),
        ("aud", r.aud),
        ("sub", r.sub),
        ("sid", r.sid),
        ("iat", r.iat),
        ("nbf", r.nbf),
        ("exp", r.exp),
        ("jti", r.jti),
    ];
    Some(
        fields
            .into_iter()
            .filter_map(|(name, value)| Some((name.to_owned(), value?)))
            .collect(),
    )
}

/// serde_json writes it back byte for byte: no duplicate keys, no escapes
/// or spaces whose effect on a verifier this harness would have to model.
fn plain(bytes: &[u8]) -> Option<Map<String, Value>> {
    let object: Map<String, Value> = serde_json::from_slice(bytes).ok()?;
    (serde_json::to_vec(&object).ok()? == bytes).then_some(object)
}

/// What verify must answer for a validly signed token with a plain header
/// and plain, well-typed claims; `None` where this harness does not say.
fn expected(
    token: &str,
    reading: &Reading,
    now: DateTime<Utc>,
) -> Option<Result<VerifiedToken, &'static str>> {
    if token.len() > MAX_TOKEN_BYTES {
        return Some(Err("TokenInvalid"));
    }
    if reading
        .header
        .keys()
        .any(|k| !["alg", "typ", "kid"].contains(&k.as_str()))
        || plain(&reading.header_bytes).is_none()
    {
        return None;
    }
    let claims = plain(&reading.claims_bytes)?;
    let user_id = Uuid::try_parse(text(&claims, "sub")?).ok()?;
    let session_id = Uuid::try_parse(text(&claims, "sid")?).ok()?;
    let (exp, nbf) = (int(&claims, "exp")?, int(&claims, "nbf")?);
    int(&claims, "iat")?;
    text(&claims, "jti")?;
    if exp < 0 || nbf < 0 {
        return None;
    }
    if text(&claims, "iss")? != ISSUER || text(&claims, "aud")? != AUDIENCE {
        return Some(Err("TokenInvalid"));
    }
    let now = now.timestamp();
    if now > exp.saturating_add(LEEWAY) {
        return Some(Err("TokenExpired"));
    }
    if now.saturating_add(LEEWAY) < nbf {
        return Some(Err("TokenInvalid"));
    }
    Some(Ok(VerifiedToken {
        user_id,
        session_id,
        expires_at: DateTime::from_timestamp(exp, 0)?,
    }))
}

fn name(result: &Result<VerifiedToken, Error>) -> Result<VerifiedToken, &'static str> {
    match result {
        Ok(v) => Ok(*v),
        Err(Error::TokenInvalid) => Err("TokenInvalid"),
        Err(Error::TokenExpired) => Err("TokenExpired"),
        Err(other) => panic!("verify may only say TokenInvalid or TokenExpired, said {other:?}"),
    }
}

fn check(token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, &'static str> {
    let answer = name(&SERVICE.verify(token, now));
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        assert_eq!(answer, Err("TokenInvalid"), "{} bytes", token.len());
    }
    let reading = read(token);
    match (&answer, &reading) {
        (Ok(_), None) => panic!("accepted a token not validly signed by a known key: {token:?}"),
        (Err("TokenExpired"), None) => {
            panic!("called expired a token not validly signed by a known key: {token:?}")
        }
        _ => {}
    }
    if let Some(reading) = &reading {
        let claims = registered(&reading.claims_bytes);
        match (&answer, &claims) {
            (Ok(v), Some(c)) => {
                assert_eq!(text(c, "iss"), Some(ISSUER), "{token:?}");
                assert_eq!(text(c, "aud"), Some(AUDIENCE), "{token:?}");
                assert_eq!(
                    text(c, "sub").and_then(|s| Uuid::try_parse(s).ok()),
                    Some(v.user_id),
                    "{token:?}"
                );
                assert_eq!(
                    text(c, "sid").and_then(|s| Uuid::try_parse(s).ok()),
                    Some(v.session_id),
                    "{token:?}"
                );
                let exp = int(c, "exp").expect("an integer exp");
                assert_eq!(exp, v.expires_at.timestamp(), "{token:?}");
                assert!(now.timestamp() <= exp.saturating_add(LEEWAY), "{token:?}");
                let nbf = int(c, "nbf").expect("an integer nbf");
                assert!(now.timestamp().saturating_add(LEEWAY) >= nbf, "{token:?}");
            }
            (Ok(_), None) => panic!("accepted claims that cannot be read: {token:?}"),
            (Err("TokenExpired"), c) => {
                let exp = c.as_ref().and_then(|c| int(c, "exp"));
                assert!(
                    exp.is_some_and(|exp| now.timestamp() > exp.saturating_add(LEEWAY)),
                    "called expired a token that is not: {token:?} at {now}"
                );
            }
            _ => {}
        }
        if let Some(want) = expected(token, reading, now) {
            assert_eq!(answer, want, "{token:?} at {now}");
        }
    }
    answer
}

fn verify_twice(token: &str, nows: [Now; 2]) {
    let [first, second] = nows.map(Now::at);
    let a = check(token, first);
    let _ = check(token, second);
    assert_eq!(a, check(token, first), "same token, same moment: {token:?}");
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { text, nows } => verify_twice(&text, nows),
        Input::Issued {
            user,
            session,
            issued,
            edits,
            nows,
        } => {
            let (user, session) = (Uuid::from_u128(user), Uuid::from_u128(session));
            let at = base_time() + chrono::TimeDelta::seconds(issued.into());
            if at.timestamp() < 0 {
                // No server clock reads a time before 1970 (and jsonwebtoken
                // takes `nbf` as unsigned, so such a token never verifies).
                return;
            }
            let original = SERVICE.issue(user, session, at).expect("issue").token;
            let token = edits.iter().fold(original.clone(), apply);
            if token == original {
                // Untouched: accepted exactly within its window.
                for now in nows.map(Now::at) {
                    let offset = now.timestamp() - at.timestamp();
                    let answer = SERVICE.verify(&token, now);
                    if (-LEEWAY..=TTL_SECONDS + LEEWAY).contains(&offset) {
                        let v = answer.expect("an untouched token in its window verifies");
                        assert_eq!((v.user_id, v.session_id), (user, session));
                        assert_eq!(v.expires_at.timestamp(), at.timestamp() + TTL_SECONDS);
                    } else {
                        assert!(answer.is_err(), "an untouched token outside its window");
                    }
                }
            }
            verify_twice(&token, nows);
        }
        Input::Forged {
            signer,
            header,
            claims,
            edits,
            nows,
        } => {
            let base = base_time().timestamp();
            let mut h = json!({"alg": "EdDSA", "typ": "at+jwt", "kid": signer.key().kid});
            let mut c = json!({
                "iss": ISSUER, "aud": AUDIENCE, "sub": USER.to_string(), "sid": SESSION.to_string(),
                "iat": base, "nbf": base, "exp": base + TTL_SECONDS,
                "jti": "00000000-0000-4000-8000-000000000000",
            });
            for edit in &header {
                apply_json(h.as_object_mut().expect("an object"), edit);
            }
            for edit in &claims {
                apply_json(c.as_object_mut().expect("an object"), edit);
            }
            let message = format!(
                "{}.{}",
                b64(&serde_json::to_vec(&h).expect("JSON")),
                b64(&serde_json::to_vec(&c).expect("JSON"))
            );
            let signed = format!("{message}.{}", sign(signer, &message));
            let token = edits.iter().fold(signed, apply);
            verify_twice(&token, nows);
        }
    }
});
