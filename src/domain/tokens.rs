//! Access tokens: EdDSA (Ed25519) JWTs with `typ: at+jwt` (RFC 9068), signed
//! with keys kept in the database and published as a JWK Set (RFC 7517).
//! Refresh tokens: 256 random bits, stored only as a SHA-256 hash.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::key_encryption::{self, KeyEncryptionKey};
use crate::{
    domain::error::{Error, Result},
    store::{self, entities::signing_key, keys},
};

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
/// Clock skew tolerated on `exp` and `nbf` (API.md: at most 5 s).
pub const LEEWAY_SECONDS: i64 = 5;
/// Ours are about 400 bytes; anything far larger is not ours and is refused
/// before any parsing work.
const MAX_TOKEN_BYTES: usize = 4096;
const ALGORITHM_NAME: &str = "EdDSA";

/// What warden puts in an access token. Roles and account status are
/// deliberately absent: warden reads them from the database on every call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub sid: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
}

/// An access token whose signature, issuer, audience and times hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedToken {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

pub struct IssuedToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A new Ed25519 key pair as a `signing_keys` row; `kid` is the RFC 7638
/// thumbprint of the public key.
pub fn generate_signing_key(
    now: DateTime<Utc>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<signing_key::Model> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    // `SigningKey` and the PKCS#8 document wipe themselves on drop.
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private_der = key
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("PKCS#8 encoding: {e}"))?;
    let public_key = key.verifying_key().to_bytes().to_vec();
    let kid = thumbprint(&URL_SAFE_NO_PAD.encode(&public_key));
    Ok(signing_key::Model {
        private_key: key_encryption::seal(kek, &kid, private_der.as_bytes())?,
        kid,
        algorithm: ALGORITHM_NAME.to_owned(),
        public_key,
        created_at: now,
        retired_at: None,
        retire_after: None,
    })
}

/// How often every server reloads the signing keys from the database, so
/// that a key rotated anywhere is used and published everywhere: the
/// default of `WARDEN_KEY_RELOAD_INTERVAL`.
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(30);
/// How long one reload may take beyond its interval, at least: its few
/// queries are each bounded by `WARDEN_DATABASE_TIMEOUT`.
const MIN_RELOAD_DURATION: Duration = Duration::from_secs(60);

/// How soon after a newer key is committed this replica signs with it: at
/// its next reload, one interval (and the reload's own duration) later. It
/// is stored for every running replica (`store::keys::report_replica`), so
/// that a replaced key is kept for the slowest of them, whatever each is
/// set to.
pub fn switch_within(reload_interval: Duration, database_timeout: Duration) -> Duration {
    reload_interval.saturating_add(MIN_RELOAD_DURATION.max(database_timeout.saturating_mul(4)))
}

/// When a key that no longer signs may be deleted, if that is to be stored
/// (`None`: what is stored stands).
///
/// Computed by the first replica that sees the key superseded: by then the
/// newer key is committed, every running replica signs with the newer key
/// within `longest_switch` (the longest `switch_within` they reported), and
/// the last token signed with this one expires an access-token lifetime
/// later, verified with `LEEWAY_SECONDS` of leeway.
/// A replica that signed with the key until this very reload postpones it,
/// if need be, to its own last token's expiry: that covers a replica whose
/// access tokens live longer than the first one's, or whose reloads failed
/// for a while. A stored time is never brought forward, so every replica
/// deletes a key only once no replica's tokens need it.
fn retire_after(
    stored: Option<DateTime<Utc>>,
    signed_with_it_until_now: bool,
    now: DateTime<Utc>,
    ttl: TimeDelta,
    longest_switch: Duration,
) -> Option<DateTime<Utc>> {
    let outlived = ttl + TimeDelta::seconds(LEEWAY_SECONDS);
    let later = |span: TimeDelta| {
        now.checked_add_signed(span)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    let wanted = match stored {
        None => later(
            TimeDelta::from_std(longest_switch)
                .unwrap_or(TimeDelta::MAX)
                .checked_add(&outlived)
                .unwrap_or(TimeDelta::MAX),
        ),
        Some(_) if signed_with_it_until_now => later(outlived),
        Some(_) => return None,
    };
    match stored {
        Some(at) if at >= wanted => None,
        _ => Some(wanted),
    }
}

/// When a new key must say it was created, so that it is the newest and
/// signs: now, unless the newest key claims a later time (another
/// process's clock ahead of this one's).
fn rotation_time(now: DateTime<Utc>, newest: Option<&signing_key::Model>) -> DateTime<Utc> {
    match newest {
        Some(row) if row.created_at >= now => row.created_at + TimeDelta::milliseconds(1),
        _ => now,
    }
}

/// The private key of `row` as PKCS#8 DER, if this process can use it: it
/// opens with `kek` (see `key_encryption::open`) and is the Ed25519 key of
/// the row's public key, so that nothing signs tokens its published key
/// cannot verify.
fn usable_private_key(
    kek: Option<&KeyEncryptionKey>,
    row: &signing_key::Model,
) -> Result<Zeroizing<Vec<u8>>> {
    let der = key_encryption::open(kek, &row.kid, &row.private_key)?;
    check_key_pair(row, &der)?;
    Ok(der)
}

fn check_key_pair(row: &signing_key::Model, private_der: &[u8]) -> Result<()> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    // jsonwebtoken takes a public key of any length and then panics at
    // every verification: a damaged row must be refused here.
    if row.public_key.len() != ed25519_dalek::PUBLIC_KEY_LENGTH {
        return Err(Error::Unexpected(anyhow::anyhow!(
            "public key {} is {} bytes, not an Ed25519 key",
            row.kid,
            row.public_key.len()
        )));
    }
    let key = ed25519_dalek::SigningKey::from_pkcs8_der(private_der)
        .map_err(|_| anyhow::anyhow!("signing key {} is not an Ed25519 PKCS#8 key", row.kid))?;
    if key.verifying_key().as_bytes().as_slice() != row.public_key.as_slice() {
        return Err(Error::Unexpected(anyhow::anyhow!(
            "signing key {} does not match its public key",
            row.kid
        )));
    }
    Ok(())
}

/// Without a key-encryption key the private keys sit in the clear in the
/// database; in a PostgreSQL database, shared by replicas and backed up
/// apart from them, that is worth saying at every start.
fn warn_if_clear_in_shared_database(
    db: &sea_orm::DatabaseConnection,
    kek: Option<&KeyEncryptionKey>,
) {
    if kek.is_none() && keys::is_shared_database(db) {
        tracing::warn!(
            "signing keys are stored in the clear in a shared PostgreSQL database: whoever can \
             read it, or a backup of it, can mint access tokens; set WARDEN_KEY_ENCRYPTION_KEY \
             or WARDEN_KEY_ENCRYPTION_KEY_FILE"
        );
    }
}

/// Seals the keys of `live` stored in the clear, in place; how many. Each
/// is checked first, so that nothing but a sound key gets sealed.
async fn seal_clear_keys(
    txn: &sea_orm::DatabaseTransaction,
    kek: &KeyEncryptionKey,
    live: &mut [signing_key::Model],
) -> Result<usize> {
    let mut sealed = 0;
    for row in live
        .iter_mut()
        .filter(|r| !key_encryption::is_sealed(&r.private_key))
    {
        check_key_pair(row, &row.private_key)?;
        let clear = Zeroizing::new(std::mem::take(&mut row.private_key));
        row.private_key = key_encryption::seal(Some(kek), &row.kid, &clear)?;
        keys::set_private_key(txn, &row.kid, row.private_key.clone()).await?;
        tracing::info!(kid = %row.kid, "sealed a signing key stored in the clear");
        sealed += 1;
    }
    Ok(sealed)
}

/// Adds a new signing key; it signs from the next reload on, and older
/// keys keep verifying until they retire (see `retire_after`). Every key
/// there is must open with `kek`; with one, keys stored in the clear are
/// sealed on the way (the new key replaces them as the signer anyway).
pub async fn rotate_keys(
    db: &sea_orm::DatabaseConnection,
    now: DateTime<Utc>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<signing_key::Model> {
    warn_if_clear_in_shared_database(db, kek);
    let key = store::serializable(db, |txn| {
        let kek = kek.cloned();
        Box::pin(async move {
            let mut live = keys::live(txn).await?;
            if let Some(kek) = &kek {
                seal_clear_keys(txn, kek, &mut live).await?;
            }
            // Refuse to add a clear key next to sealed ones, or the other
            // way round: every key must open with what the servers have.
            for row in &live {
                usable_private_key(kek.as_ref(), row)?;
            }
            let created_at = rotation_time(now, live.first());
            Ok::<_, Error>(
                keys::insert(txn, generate_signing_key(created_at, kek.as_ref())?).await?,
            )
        })
    })
    .await?;
    tracing::info!(kid = %key.kid, "added a signing key");
    Ok(key)
}

/// The live signing keys, newest first; on the very first start, a new one.
/// Done in one serializable transaction, so replicas that start together
/// agree on a single key.
///
/// With a key-encryption key, keys stored in the clear are sealed (the
/// only place where a clear key is taken in), and a new key is rotated in:
/// the clear copies may survive in backups and logs of the database, so
/// they must stop signing. They verify on until they retire like any
/// replaced key.
pub async fn load_or_create_keys(
    db: &sea_orm::DatabaseConnection,
    now: DateTime<Utc>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<Vec<signing_key::Model>> {
    warn_if_clear_in_shared_database(db, kek);
    // The usual start: keys exist and need no change. Decided by a plain
    // read, so that a read-only database still starts and serves reads.
    let live = keys::live(db).await?;
    let needs_sealing = kek.is_some()
        && live
            .iter()
            .any(|r| !key_encryption::is_sealed(&r.private_key));
    if !live.is_empty() && !needs_sealing {
        for row in &live {
            usable_private_key(kek, row)?;
        }
        return Ok(live);
    }
    store::serializable(db, |txn| {
        let kek = kek.cloned();
        Box::pin(async move {
            let mut live = keys::live(txn).await?;
            if live.is_empty() {
                let key = keys::insert(txn, generate_signing_key(now, kek.as_ref())?).await?;
                tracing::info!(kid = %key.kid, "generated the first signing key");
                return Ok(vec![key]);
            }
            if let Some(kek) = &kek {
                let sealed = seal_clear_keys(txn, kek, &mut live).await?;
                if sealed > 0 {
                    let created_at = rotation_time(now, live.first());
                    let key =
                        keys::insert(txn, generate_signing_key(created_at, Some(kek))?).await?;
                    tracing::warn!(
                        sealed,
                        kid = %key.kid,
                        "sealed the signing keys stored in the clear and rotated in a new one: \
                         their clear copies may survive in backups, so they sign no more and \
                         retire like any replaced key"
                    );
                    live.insert(0, key);
                }
            }
            // Every key must open with what this process was given.
            for row in &live {
                usable_private_key(kek.as_ref(), row)?;
            }
            Ok(live)
        })
    })
    .await
}

/// RFC 7638: SHA-256 over the required members in lexicographic order.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

struct Verifier {
    key: DecodingKey,
}

/// The keys of one moment: the newest signs, all of them verify.
struct KeyRing {
    /// Tells rings apart, so that what was verified with an older ring (whose
    /// keys may since have been retired) is not taken on trust.
    generation: u64,
    signer_kid: String,
    signer: EncodingKey,
    verifiers: HashMap<String, Verifier>,
    jwks_json: String,
    /// One per key, newest first: secrets that every replica derives alike.
    page_token_keys: Zeroizing<Vec<[u8; 32]>>,
}

#[derive(Serialize)]
struct Jwk<'a> {
    kty: &'static str,
    crv: &'static str,
    x: String,
    kid: &'a str,
    alg: &'static str,
    #[serde(rename = "use")]
    use_: &'static str,
}

#[derive(Serialize)]
struct JwkSet<'a> {
    keys: Vec<Jwk<'a>>,
}

impl KeyRing {
    /// `rows` newest first, as `store::keys::live` returns them.
    fn new(
        rows: &[signing_key::Model],
        kek: Option<&KeyEncryptionKey>,
        generation: u64,
    ) -> Result<Self> {
        let newest = rows
            .first()
            .ok_or_else(|| anyhow::anyhow!("no signing key"))?;
        let mut verifiers = HashMap::new();
        let mut jwks = Vec::new();
        let mut page_token_keys = Zeroizing::new(Vec::new());
        let mut signer = None;
        for row in rows {
            // A damaged row (a public key of the wrong length, a private
            // key that does not match it) stops the start here.
            let private_der = usable_private_key(kek, row)?;
            page_token_keys.push(derive_secret(&private_der, b"warden page token v1"));
            if signer.is_none() {
                signer = Some(EncodingKey::from_ed_der(&private_der));
            }
            let x = URL_SAFE_NO_PAD.encode(&row.public_key);
            let key = DecodingKey::from_ed_components(&x)
                .with_context(|| format!("public key {} is not Ed25519", row.kid))?;
            verifiers.insert(row.kid.clone(), Verifier { key });
            jwks.push(Jwk {
                kty: "OKP",
                crv: "Ed25519",
                x,
                kid: &row.kid,
                alg: ALGORITHM_NAME,
                use_: "sig",
            });
        }
        let jwks_json = serde_json::to_string(&JwkSet { keys: jwks }).context("JWKS")?;
        Ok(Self {
            generation,
            signer_kid: newest.kid.clone(),
            signer: signer.ok_or_else(|| anyhow::anyhow!("no signing key"))?,
            verifiers,
            jwks_json,
            page_token_keys,
        })
    }
}

/// A secret for another purpose, derived from a signing key (HMAC-SHA256
/// keyed with the private key, over a label), so replicas need no other
/// shared secret.
fn derive_secret(private_key: &[u8], label: &[u8]) -> [u8; 32] {
    // hmac 0.12 keeps the padded key in its state without wiping it; the
    // state lives only for this call.
    use hmac::{Hmac, Mac};
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(private_key).unwrap_or_else(|_| unreachable!());
    mac.update(label);
    mac.finalize().into_bytes().into()
}

/// How many verified tokens are remembered. A token is about 400 bytes but
/// is remembered by its SHA-256, so this is about 2 MiB at most; at 15
/// minutes per token it covers some 18 new tokens a second before the
/// oldest are forgotten (and then only verified again).
const VERIFIED_CACHE_CAPACITY: usize = 16_384;

/// What the signature of a token vouched for, remembered so that a token
/// presented again (every call of a client carries the same one until it
/// expires) is not verified again: an Ed25519 verification is most of the
/// cost of a token check. Only what the token itself says is remembered;
/// the times are checked against `now` on every use, and the session and
/// the account are read from the database by the caller on every call, so
/// the cache never lets a revoked session or a demoted admin through.
#[derive(Debug, Clone, Copy)]
struct Vouched {
    token: VerifiedToken,
    not_before: i64,
    expires: i64,
    /// The key ring that verified it.
    generation: u64,
}

/// Issues and verifies access tokens.
pub struct TokenService {
    kek: Option<KeyEncryptionKey>,
    issuer: String,
    audience: String,
    ttl: Duration,
    reload_interval: Duration,
    /// `switch_within` of this replica, as it reports it.
    switch_within: Duration,
    /// This process among the replicas that sign (`store::keys::report_replica`).
    replica_id: Uuid,
    validation: Validation,
    ring: RwLock<Arc<KeyRing>>,
    /// Keyed by the SHA-256 of the whole token: a token that differs in any
    /// byte is another key, so nothing unverified is ever found here.
    vouched: quick_cache::sync::Cache<[u8; 32], Vouched>,
    signature_checks: AtomicU64,
}

impl TokenService {
    pub fn new(
        issuer: String,
        audience: String,
        ttl: Duration,
        keys: &[signing_key::Model],
        kek: Option<KeyEncryptionKey>,
    ) -> Result<Self> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&issuer]);
        validation.set_audience(&[&audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Times are checked against the caller's `now` below, not the
        // library's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        let ring = RwLock::new(Arc::new(KeyRing::new(keys, kek.as_ref(), 0)?));
        Ok(Self {
            kek,
            issuer,
            audience,
            ttl,
            reload_interval: KEY_RELOAD_INTERVAL,
            switch_within: switch_within(KEY_RELOAD_INTERVAL, Duration::ZERO),
            replica_id: Uuid::new_v4(),
            validation,
            ring,
            vouched: quick_cache::sync::Cache::new(VERIFIED_CACHE_CAPACITY),
            signature_checks: AtomicU64::new(0),
        })
    }

    /// How often `reload` runs (`WARDEN_KEY_RELOAD_INTERVAL`). It does not
    /// decide when a replaced key goes (see `retire_after`), so replicas
    /// may be set differently.
    pub fn with_reload_interval(mut self, interval: Duration, database_timeout: Duration) -> Self {
        self.reload_interval = interval;
        self.switch_within = switch_within(interval, database_timeout);
        self
    }

    /// Tells the other replicas how soon this one signs with a new key, so
    /// that keys they retire outlive this one's use of them. Done at start
    /// and at every reload. Returns the longest such time of the replicas
    /// that run.
    pub async fn report_replica(
        &self,
        db: &sea_orm::DatabaseConnection,
        now: DateTime<Utc>,
    ) -> Result<Duration> {
        Ok(keys::report_replica(db, self.replica_id, self.switch_within, now).await?)
    }

    pub fn reload_interval(&self) -> Duration {
        self.reload_interval
    }

    fn ring(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn access_token_ttl(&self) -> Duration {
        self.ttl
    }

    pub fn issue(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken> {
        let ring = self.ring();
        let ttl = TimeDelta::from_std(self.ttl).context("access token TTL")?;
        let expires_at = now + ttl;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(ring.signer_kid.clone());
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: user_id.to_string(),
            sid: session_id.to_string(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
            jti: Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&header, &claims, &ring.signer).context("signing")?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Checks everything a token carries: algorithm pinned to EdDSA, `typ`,
    /// a known `kid`, the signature, `iss`, `aud`, `exp` and `nbf` (with
    /// `LEEWAY_SECONDS`). Session and account state are the caller's part.
    /// A token seen before with the same keys is not verified again; its
    /// times are checked all the same.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Error::TokenInvalid);
        }
        let ring = self.ring();
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let vouched = match self.vouched.get(&digest) {
            Some(v) if v.generation == ring.generation => v,
            _ => {
                let v = self.verify_signature(&ring, token)?;
                self.vouched.insert(digest, v);
                v
            }
        };
        let now = now.timestamp();
        if now > vouched.expires.saturating_add(LEEWAY_SECONDS) {
            return Err(Error::TokenExpired);
        }
        if now.saturating_add(LEEWAY_SECONDS) < vouched.not_before {
            return Err(Error::TokenInvalid);
        }
        Ok(vouched.token)
    }

    /// The signature and every claim that does not depend on the time.
    fn verify_signature(&self, ring: &KeyRing, token: &str) -> Result<Vouched> {
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let header = jsonwebtoken::decode_header(token).map_err(|_| Error::TokenInvalid)?;
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE)
                || t.eq_ignore_ascii_case("application/at+jwt")
        });
        if header.alg != Algorithm::EdDSA || !typ_ok {
            return Err(Error::TokenInvalid);
        }
        let verifier = header
            .kid
            .as_deref()
            .and_then(|kid| ring.verifiers.get(kid))
            .ok_or(Error::TokenInvalid)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, &verifier.key, &self.validation)
            .map_err(|_| Error::TokenInvalid)?
            .claims;
        let user_id = Uuid::try_parse(&claims.sub).map_err(|_| Error::TokenInvalid)?;
        let session_id = Uuid::try_parse(&claims.sid).map_err(|_| Error::TokenInvalid)?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or(Error::TokenInvalid)?;
        Ok(Vouched {
            token: VerifiedToken {
                user_id,
                session_id,
                expires_at,
            },
            not_before: claims.nbf,
            expires: claims.exp,
            generation: ring.generation,
        })
    }

    /// Reloads the keys from the database: the newest key this process can
    /// use signs, and every usable key verifies. A key it cannot use (stored
    /// in the clear although a key-encryption key is set, sealed with
    /// another key-encryption key, damaged) is refused with an error in the
    /// log at every reload, and neither signs nor verifies here.
    ///
    /// Keys older than the signer are retired: each gets a retire-after
    /// time stored with it by the first replica that sees it superseded (see
    /// `retire_after`), and is deleted by whichever replica reloads once
    /// that time has passed. No replica's own settings decide when a key
    /// shared by all of them goes. Returns the kids that stopped verifying
    /// here: retired by this reload or by another replica.
    pub async fn reload(
        &self,
        db: &sea_orm::DatabaseConnection,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let rows = keys::live(db).await?;
        let kek = self.kek.as_ref();
        let usable: Vec<&signing_key::Model> = rows
            .iter()
            .filter(|row| match usable_private_key(kek, row) {
                Ok(_) => true,
                Err(e) => {
                    tracing::error!(kid = %row.kid, error = %e, "refusing a stored signing key");
                    false
                }
            })
            .collect();
        let Some(signer) = usable.first() else {
            return Err(Error::Unexpected(anyhow::anyhow!(
                "no signing key in the database can be used: every one is gone or refused"
            )));
        };
        let current = self.ring();
        let ttl = TimeDelta::from_std(self.ttl).context("access token TTL")?;
        // Best effort: a read-only database still reloads (and then stores
        // no retire-after time either).
        let longest_switch = match self.report_replica(db, now).await {
            Ok(longest) => longest,
            Err(e) => {
                tracing::warn!(error = %e, "cannot report this replica's key reload interval");
                self.switch_within
            }
        };
        for old in usable.iter().skip(1) {
            let signed_until_now = current.signer_kid == old.kid;
            if let Some(at) =
                retire_after(old.retire_after, signed_until_now, now, ttl, longest_switch)
            {
                keys::postpone_retirement(db, &old.kid, at).await?;
                tracing::info!(kid = %old.kid, retire_after = %at, "a replaced signing key retires after");
            }
        }
        let mut deleted = Vec::new();
        for row in &rows {
            let due = row.retire_after.is_some_and(|at| at <= now);
            if due && row.kid != signer.kid && keys::delete_retired(db, &row.kid, now).await? > 0 {
                tracing::info!(kid = %row.kid, "retired a signing key");
                deleted.push(row.kid.as_str());
            }
        }
        let keep: Vec<signing_key::Model> = usable
            .into_iter()
            .filter(|r| !deleted.contains(&r.kid.as_str()))
            .cloned()
            .collect();
        let mut retired: Vec<String> = current
            .verifiers
            .keys()
            .filter(|kid| !keep.iter().any(|r| &r.kid == *kid))
            .cloned()
            .collect();
        retired.sort();
        let same = current.verifiers.len() == keep.len()
            && retired.is_empty()
            && keep.first().map(|r| r.kid.as_str()) == Some(current.signer_kid.as_str());
        if !same {
            self.replace_keys(&keep)?;
        }
        Ok(retired)
    }

    /// Signs and verifies with `rows` (newest first) from now on. What the
    /// old keys verified is verified again before it is trusted, and the
    /// remembered verdicts are dropped.
    fn replace_keys(&self, rows: &[signing_key::Model]) -> Result<()> {
        let mut current = self.ring.write().unwrap_or_else(|e| e.into_inner());
        let ring = Arc::new(KeyRing::new(
            rows,
            self.kek.as_ref(),
            current.generation.wrapping_add(1),
        )?);
        tracing::info!(signing = %ring.signer_kid, published = rows.len(), "signing keys reloaded");
        *current = ring;
        drop(current);
        self.vouched.clear();
        Ok(())
    }

    /// How many tokens had their signature checked since start (the rest
    /// were remembered).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// Keys for page tokens: the first seals, any opens.
    pub fn page_token_keys(&self) -> Zeroizing<Vec<[u8; 32]>> {
        self.ring().page_token_keys.clone()
    }

    /// The public keys as an RFC 7517 JWK Set.
    pub fn jwks_json(&self) -> String {
        self.ring().jwks_json.clone()
    }
}

/// A refresh token as handed to the client, and the hash that is stored.
pub struct RefreshToken {
    pub token: SecretString,
    pub hash: Vec<u8>,
}

impl RefreshToken {
    pub fn generate() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash_refresh_token(&token);
        Ok(Self {
            token: SecretString::from(token),
            hash,
        })
    }
}

/// SHA-256 is enough here (no salt, no argon2): the token has 256 bits of
/// entropy, so the hash cannot be reversed by guessing.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use secrecy::ExposeSecret;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    fn service(keys: &[signing_key::Model]) -> TokenService {
        TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            keys,
            None,
        )
        .unwrap()
    }

    #[test]
    fn an_issued_token_verifies_and_names_its_user_and_session() {
        let key = generate_signing_key(now(), None).unwrap();
        let tokens = service(std::slice::from_ref(&key));
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let issued = tokens.issue(user, session, now()).unwrap();
        let verified = tokens.verify(&issued.token, now()).unwrap();
        assert_eq!(verified.user_id, user);
        assert_eq!(verified.session_id, session);
        assert_eq!(verified.expires_at, now() + TimeDelta::seconds(900));
        let header = jsonwebtoken::decode_header(&issued.token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(header.kid.as_deref(), Some(key.kid.as_str()));
    }

    #[test]
    fn expiry_allows_five_seconds_of_leeway_and_no_more() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let at = |secs| now() + TimeDelta::seconds(secs);
        assert!(tokens.verify(&issued.token, at(900 + 5)).is_ok());
        assert!(matches!(
            tokens.verify(&issued.token, at(900 + 6)),
            Err(Error::TokenExpired)
        ));
    }

    #[test]
    fn a_token_from_the_future_is_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens
            .issue(
                Uuid::new_v4(),
                Uuid::new_v4(),
                now() + TimeDelta::seconds(60),
            )
            .unwrap();
        assert!(matches!(
            tokens.verify(&issued.token, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn a_token_signed_by_an_unknown_key_is_invalid() {
        let ours = service(&[generate_signing_key(now(), None).unwrap()]);
        let theirs = service(&[generate_signing_key(now(), None).unwrap()]);
        let forged = theirs.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        assert!(matches!(
            ours.verify(&forged.token, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn wrong_issuer_or_audience_is_invalid() {
        let key = generate_signing_key(now(), None).unwrap();
        let other_iss = TokenService::new(
            "other".into(),
            "warden".into(),
            Duration::from_secs(60),
            std::slice::from_ref(&key),
            None,
        )
        .unwrap();
        let other_aud = TokenService::new(
            "warden".into(),
            "other".into(),
            Duration::from_secs(60),
            std::slice::from_ref(&key),
            None,
        )
        .unwrap();
        let ours = service(&[key]);
        for foreign in [&other_iss, &other_aud] {
            let t = foreign
                .issue(Uuid::new_v4(), Uuid::new_v4(), now())
                .unwrap();
            assert!(matches!(
                ours.verify(&t.token, now()),
                Err(Error::TokenInvalid)
            ));
        }
    }

    #[test]
    fn a_tampered_payload_is_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let parts: Vec<&str> = issued.token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = serde_json::Value::String(Uuid::new_v4().to_string());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        let tampered = format!("{}.{}.{}", parts[0], payload, parts[2]);
        assert!(matches!(
            tokens.verify(&tampered, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn garbage_empty_and_oversized_tokens_are_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        for bad in ["", "abc", "a.b.c", &"x".repeat(MAX_TOKEN_BYTES + 1)] {
            assert!(
                matches!(tokens.verify(bad, now()), Err(Error::TokenInvalid)),
                "{bad:.20}"
            );
        }
    }

    #[test]
    fn the_jwks_publishes_every_key_as_an_ed25519_okp_key() {
        let (a, b) = (
            generate_signing_key(now(), None).unwrap(),
            generate_signing_key(now(), None).unwrap(),
        );
        let tokens = service(&[a.clone(), b.clone()]);
        let jwks: serde_json::Value = serde_json::from_str(&tokens.jwks_json()).unwrap();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for (jwk, row) in keys.iter().zip([&a, &b]) {
            assert_eq!(jwk["kty"], "OKP");
            assert_eq!(jwk["crv"], "Ed25519");
            assert_eq!(jwk["alg"], "EdDSA");
            assert_eq!(jwk["use"], "sig");
            assert_eq!(jwk["kid"], row.kid.as_str());
            assert_eq!(
                URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
                row.public_key
            );
        }
    }

    #[test]
    fn the_newest_key_signs_and_every_live_key_verifies() {
        let old = generate_signing_key(now(), None).unwrap();
        let mut new = generate_signing_key(now(), None).unwrap();
        new.created_at = now() + TimeDelta::seconds(1);
        let before = service(std::slice::from_ref(&old));
        let token = before.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let after = service(&[new.clone(), old]);
        assert!(
            after.verify(&token.token, now()).is_ok(),
            "the old key still verifies"
        );
        let fresh = after.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let kid = jsonwebtoken::decode_header(&fresh.token)
            .unwrap()
            .kid
            .unwrap();
        assert_eq!(kid, new.kid);
    }

    #[test]
    fn a_token_seen_before_is_not_verified_again_but_still_expires() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        let first = tokens.verify(&issued.token, now()).unwrap();
        let again = tokens.verify(&issued.token, now()).unwrap();
        assert_eq!(first, again);
        assert_eq!(tokens.signature_checks(), 1);
        assert!(matches!(
            tokens.verify(&issued.token, now() + TimeDelta::seconds(900 + 6)),
            Err(Error::TokenExpired)
        ));
    }

    #[test]
    fn a_token_altered_after_the_genuine_one_was_seen_is_still_invalid() {
        let tokens = service(&[generate_signing_key(now(), None).unwrap()]);
        let issued = tokens.issue(Uuid::new_v4(), Uuid::new_v4(), now()).unwrap();
        tokens.verify(&issued.token, now()).unwrap();
        let (head, signature) = issued.token.rsplit_once('.').unwrap();
        let mut flipped = signature.as_bytes().to_vec();
        flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
        let forged = format!("{head}.{}", String::from_utf8(flipped).unwrap());
        assert!(matches!(
            tokens.verify(&forged, now()),
            Err(Error::TokenInvalid)
        ));
        assert!(matches!(
            tokens.verify(&format!("{} ", issued.token), now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn a_remembered_token_of_a_retired_key_stops_verifying() {
        let old = generate_signing_key(now(), None).unwrap();
        let mut new = generate_signing_key(now(), None).unwrap();
        new.created_at = now() + TimeDelta::seconds(1);
        let tokens = service(&[new.clone(), old.clone()]);
        let signed_by_old = service(&[old])
            .issue(Uuid::new_v4(), Uuid::new_v4(), now())
            .unwrap();
        assert!(tokens.verify(&signed_by_old.token, now()).is_ok());
        tokens.replace_keys(&[new]).unwrap();
        assert!(matches!(
            tokens.verify(&signed_by_old.token, now()),
            Err(Error::TokenInvalid)
        ));
    }

    #[test]
    fn a_stored_public_key_of_the_wrong_length_is_refused_not_a_panic_later() {
        let mut key = generate_signing_key(now(), None).unwrap();
        key.public_key.truncate(31);
        let refused = TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            &[key],
            None,
        );
        assert!(matches!(refused, Err(Error::Unexpected(_))));
    }

    fn kek() -> KeyEncryptionKey {
        KeyEncryptionKey::parse(&"07".repeat(32)).unwrap()
    }

    #[test]
    fn with_a_kek_a_key_stored_in_the_clear_neither_signs_nor_verifies() {
        let clear = generate_signing_key(now(), None).unwrap();
        let refused = TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            &[clear],
            Some(kek()),
        );
        let Err(e) = refused else {
            panic!("a clear key was taken with a kek set")
        };
        assert!(e.to_string().contains("in the clear"), "{e}");
        let sealed = generate_signing_key(now(), Some(&kek())).unwrap();
        assert!(
            TokenService::new(
                "warden".into(),
                "warden".into(),
                Duration::from_secs(900),
                &[sealed],
                Some(kek()),
            )
            .is_ok()
        );
    }

    #[test]
    fn a_private_key_that_does_not_match_its_public_key_is_refused() {
        let mut key = generate_signing_key(now(), None).unwrap();
        key.public_key = generate_signing_key(now(), None).unwrap().public_key;
        let refused = TokenService::new(
            "warden".into(),
            "warden".into(),
            Duration::from_secs(900),
            &[key],
            None,
        );
        assert!(matches!(refused, Err(Error::Unexpected(_))));
    }

    const TTL: TimeDelta = TimeDelta::seconds(900);
    const SWITCH: Duration = Duration::from_secs(90);

    #[test]
    fn a_replica_switches_within_its_reload_interval_and_a_reload_s_longest_run() {
        assert_eq!(
            switch_within(Duration::from_secs(30), Duration::from_secs(5)),
            Duration::from_secs(90)
        );
        assert_eq!(
            switch_within(Duration::from_secs(30), Duration::from_secs(60)),
            Duration::from_secs(270)
        );
    }

    #[test]
    fn a_key_first_seen_replaced_retires_after_the_slowest_replica_switched_and_its_tokens_expired()
    {
        // However short this replica's own reload interval: a replica set
        // to reload every two hours may sign with the key that long.
        let slowest = Duration::from_secs(2 * 3600 + 60);
        let at = retire_after(None, false, now(), TTL, slowest).unwrap();
        assert_eq!(
            at,
            now() + TimeDelta::seconds(2 * 3600 + 60) + TTL + TimeDelta::seconds(5)
        );
        assert_eq!(
            retire_after(None, true, now(), TTL, slowest),
            Some(at),
            "the same for the replica that signed with it"
        );
    }

    #[test]
    fn a_stored_retire_after_time_is_never_brought_forward() {
        let stored = now() + TimeDelta::hours(2);
        assert_eq!(retire_after(Some(stored), false, now(), TTL, SWITCH), None);
        assert_eq!(
            retire_after(Some(stored), true, now(), TTL, SWITCH),
            None,
            "its own last token expires before that"
        );
    }

    #[test]
    fn a_replica_that_signed_with_a_replaced_key_until_now_keeps_it_until_its_own_tokens_expired() {
        // Stored by a replica whose tokens live a minute; this one's live
        // for an hour, and it signed with the key until this reload.
        let stored = now() + TimeDelta::seconds(65);
        let hour = TimeDelta::hours(1);
        assert_eq!(
            retire_after(Some(stored), true, now(), hour, SWITCH),
            Some(now() + hour + TimeDelta::seconds(5))
        );
        assert_eq!(
            retire_after(Some(stored), false, now(), hour, SWITCH),
            None,
            "a replica that never signed with it has no tokens of it"
        );
    }

    #[test]
    fn a_new_key_is_the_newest_even_when_the_clock_is_behind_the_newest_key() {
        let mut ahead = generate_signing_key(now(), None).unwrap();
        ahead.created_at = now() + TimeDelta::seconds(30);
        let at = rotation_time(now(), Some(&ahead));
        assert!(at > ahead.created_at);
        assert!(at - ahead.created_at <= TimeDelta::milliseconds(1));
        let behind = generate_signing_key(now() - TimeDelta::seconds(30), None).unwrap();
        assert_eq!(rotation_time(now(), Some(&behind)), now());
        assert_eq!(rotation_time(now(), None), now());
    }

    #[test]
    fn refresh_tokens_are_random_and_stored_as_their_hash() {
        let (a, b) = (
            RefreshToken::generate().unwrap(),
            RefreshToken::generate().unwrap(),
        );
        assert_ne!(a.token.expose_secret(), b.token.expose_secret());
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(a.token.expose_secret())
                .unwrap()
                .len(),
            32
        );
        assert_eq!(a.hash, hash_refresh_token(a.token.expose_secret()));
        assert_eq!(format!("{a:?}"), "RefreshToken([redacted])");
    }
}
