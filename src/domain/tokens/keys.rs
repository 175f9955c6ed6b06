//! The signing keys' life in the database: generated on the first start,
//! rotated in (`warden keys rotate`, or when a key-encryption key seals the
//! clear ones), reloaded by every replica, and retired once no replica's
//! tokens can need them.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use zeroize::Zeroizing;

use super::{
    LEEWAY_SECONDS, TokenService,
    keyring::{KeyRing, thumbprint},
};
use crate::{
    domain::{
        error::{Error, Result},
        key_encryption::{self, KeyEncryptionKey},
        rules::keys::{KeyState, key_states},
    },
    store::{self, Db, Txn, keys},
};

pub(super) const ALGORITHM_NAME: &str = "EdDSA";

/// A signing key as stored: its private key sealed with the key-encryption
/// key when one is configured, PKCS#8 DER otherwise.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    pub algorithm: String,
    /// PKCS#8 DER of the Ed25519 private key, or its sealed form.
    pub private_key: Vec<u8>,
    /// The raw 32-byte Ed25519 public key.
    pub public_key: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    /// Set once a newer key signs: when this one may be deleted, because no
    /// token it signed can still be live (`retire_after`).
    pub retire_after: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .field("retire_after", &self.retire_after)
            .finish_non_exhaustive()
    }
}

/// A new Ed25519 key pair as a `signing_keys` row; `kid` is the RFC 7638
/// thumbprint of the public key.
pub fn generate_signing_key(
    now: DateTime<Utc>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<SigningKey> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    // `SigningKey` and the PKCS#8 document wipe themselves on drop.
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let private_der = key
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("PKCS#8 encoding: {e}"))?;
    let public_key = key.verifying_key().to_bytes().to_vec();
    let kid = thumbprint(&URL_SAFE_NO_PAD.encode(&public_key));
    Ok(SigningKey {
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
pub(super) fn retire_after(
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
pub(super) fn rotation_time(now: DateTime<Utc>, newest: Option<&SigningKey>) -> DateTime<Utc> {
    match newest {
        Some(row) if row.created_at >= now => row.created_at + TimeDelta::milliseconds(1),
        _ => now,
    }
}

/// The private key of `row` as PKCS#8 DER, if this process can use it: it
/// opens with `kek` (see `key_encryption::open`) and is the Ed25519 key of
/// the row's public key, so that nothing signs tokens its published key
/// cannot verify.
pub(super) fn usable_private_key(
    kek: Option<&KeyEncryptionKey>,
    row: &SigningKey,
) -> Result<Zeroizing<Vec<u8>>> {
    let der = key_encryption::open(kek, &row.kid, &row.private_key)?;
    check_key_pair(row, &der)?;
    Ok(der)
}

pub(super) fn check_key_pair(row: &SigningKey, private_der: &[u8]) -> Result<()> {
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
fn warn_if_clear_in_shared_database(db: &Db, kek: Option<&KeyEncryptionKey>) {
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
pub(super) async fn seal_clear_keys(
    txn: &Txn,
    kek: &KeyEncryptionKey,
    live: &mut [SigningKey],
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
    db: &Db,
    now: DateTime<Utc>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<SigningKey> {
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

/// Every signing key with its state at `now`, newest first (`warden keys
/// list`); read only, so the key-encryption key is not needed.
pub async fn list_keys(db: &Db, now: DateTime<Utc>) -> Result<Vec<(SigningKey, KeyState)>> {
    let all = keys::all(db).await?;
    let states = key_states(&all, now);
    Ok(all.into_iter().zip(states).collect())
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
    db: &Db,
    now: DateTime<Utc>,
    kek: Option<&KeyEncryptionKey>,
) -> Result<Vec<SigningKey>> {
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

impl TokenService {
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
    pub async fn report_replica(&self, db: &Db, now: DateTime<Utc>) -> Result<Duration> {
        Ok(keys::report_replica(db, self.replica_id, self.switch_within, now).await?)
    }

    pub fn reload_interval(&self) -> Duration {
        self.reload_interval
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
    pub async fn reload(&self, db: &Db, now: DateTime<Utc>) -> Result<Vec<String>> {
        let rows = keys::live(db).await?;
        let kek = self.kek.as_ref();
        let usable: Vec<&SigningKey> = rows
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
        let keep: Vec<SigningKey> = usable
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
    pub(super) fn replace_keys(&self, rows: &[SigningKey]) -> Result<()> {
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
}
