//! argon2id hashing (OWASP parameters) on threads of its own.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use argon2::{
    Algorithm, Argon2, Block, Params, PasswordHash, Version,
    password_hash::phc::{Output, ParamsString, Salt},
};
use secrecy::{ExposeSecret, SecretString};

use super::policy::{NewPassword, normalize};
use crate::domain::error::{Error, Result};

/// argon2id cost, a policy object so tests can use a cheap one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashingCost {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for HashingCost {
    /// OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1.
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

impl HashingCost {
    pub fn params(&self) -> Result<Params> {
        Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| Error::Unexpected(anyhow::anyhow!("argon2 parameters: {e}")))
    }
}

/// Hashes and verifies passwords on threads of its own, one per core, so
/// that a login flood neither stalls the async workers (token checks stay
/// fast) nor allocates argon2 memory without bound. A hashing thread takes
/// the next job the moment it finishes one: no core idles between hashes
/// while calls wait. (Handing each hash from a semaphore to tokio's blocking
/// pool left 2–7 % of the CPU idle under a saturated login load.)
pub struct Hasher {
    argon2: Argon2<'static>,
    params: Params,
    jobs: flume::Sender<Job>,
    queue: Arc<Queue>,
    /// A hash of a random password with the current parameters: unknown
    /// emails are verified against it so they cost what a wrong password
    /// costs.
    dummy_hash: String,
    verifications: AtomicU64,
}

/// Work for a hashing thread, in its workspace.
type Job = Box<dyn FnOnce(&mut [Block]) + Send>;

/// The hashing queue's counters.
struct Queue {
    /// Calls that hold a place and have not started hashing, and how many
    /// may: beyond that a flood is answered at once instead of queueing
    /// without bound.
    waiting: AtomicUsize,
    max_waiting: usize,
    /// Hashes running.
    running: AtomicUsize,
}

/// A hashing thread: runs jobs until the hasher is dropped, then returns
/// its (wiped) workspace.
///
/// argon2's working memory (`m` KiB) is kept between hashes, allocated at
/// first use: allocating it for every hash costs page faults and zeroing,
/// and freed 19 MiB blocks linger in the allocator's per-thread arenas (under
/// a login flood the process grew past 600 MiB). What a password was hashed
/// into stays in the workspace until the next hash overwrites it (argon2
/// writes every block before it reads one), so a workspace is wiped as soon
/// as no job is queued for it; one that a queued job takes at once is not:
/// the wipe would cost 19 MiB of writes, some 3 % of a saturated login load,
/// for nothing.
fn hash_jobs(jobs: flume::Receiver<Job>, blocks: usize) -> Vec<Block> {
    let mut workspace = Vec::new();
    while let Ok(job) = jobs.recv() {
        if workspace.is_empty() {
            workspace = vec![Block::default(); blocks];
        }
        // A job that panics drops its reply (its caller gets an error); the
        // thread lives on.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut workspace)));
        if jobs.is_empty() {
            // As words: one memset.
            for block in &mut workspace {
                block.as_mut().fill(0);
            }
        }
    }
    workspace
}

/// A PHC string of `password` made with `argon2`'s parameters and a fresh
/// salt, computed in `memory`.
fn hash_in(argon2: &Argon2<'_>, memory: &mut [Block], password: &[u8]) -> Result<String> {
    let fail = |e: &dyn std::fmt::Display| Error::Unexpected(anyhow::anyhow!("argon2: {e}"));
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| fail(&e))?;
    let mut output = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2
        .hash_password_into_with_memory(password, &salt, &mut output, memory)
        .map_err(|e| fail(&e))?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params()).map_err(|e| fail(&e))?,
        salt: Some(Salt::new(&salt).map_err(|e| fail(&e))?),
        hash: Some(Output::new(&output).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` hashes to `phc`, with the parameters `phc` names,
/// computed in `memory` (or in memory of its own if `phc` needs more). The
/// comparison takes constant time.
fn verify_in(memory: &mut [Block], password: &[u8], phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm.as_str()) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let blocks = params.block_count();
    let argon2 = Argon2::new(algorithm, version, params);
    let mut output = [0u8; Output::MAX_LENGTH];
    let Some(output) = output.get_mut(..expected.len()) else {
        return false;
    };
    let computed = if blocks <= memory.len() {
        argon2.hash_password_into_with_memory(password, salt, output, &mut *memory)
    } else {
        argon2.hash_password_into(password, salt, output)
    };
    computed.is_ok() && Output::new(output).is_ok_and(|o| &o == expected)
}

/// A hash counted as running until dropped (also when its work panics).
struct Running(Arc<Queue>);

impl Running {
    fn start(queue: Arc<Queue>) -> Self {
        queue.running.fetch_add(1, Ordering::SeqCst);
        Self(queue)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A call's place in the hashing queue, given up when its hash starts (or
/// the call gives up).
pub struct Place {
    queue: Arc<Queue>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many calls may wait for a hashing thread, per thread.
const WAITING_PER_THREAD: usize = 32;
/// What a client is told to wait when the queue is full.
const OVERLOAD_RETRY: Duration = Duration::from_secs(1);

impl Hasher {
    /// A hasher with `concurrency` hashing threads.
    pub fn new(cost: HashingCost, concurrency: usize) -> Result<Self> {
        let params = cost.params()?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        // Made in memory of its own, so that an idle server holds none.
        let dummy_hash = hash_in(
            &argon2,
            &mut vec![Block::default(); params.block_count()],
            &random,
        )?;
        let concurrency = concurrency.max(1);
        let queue = Arc::new(Queue {
            waiting: AtomicUsize::new(0),
            max_waiting: concurrency * WAITING_PER_THREAD,
            running: AtomicUsize::new(0),
        });
        // The threads end when the hasher, the only sender, is dropped.
        let (jobs, incoming) = flume::unbounded();
        for _ in 0..concurrency {
            let (incoming, blocks) = (incoming.clone(), params.block_count());
            std::thread::Builder::new()
                .name("warden-hash".into())
                .spawn(move || drop(hash_jobs(incoming, blocks)))
                .context("starting a hashing thread")?;
        }
        Ok(Self {
            argon2,
            params,
            jobs,
            queue,
            dummy_hash,
            verifications: AtomicU64::new(0),
        })
    }

    /// Whether `phc` was made with other parameters (or another algorithm)
    /// than the current ones.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(hash) = PasswordHash::new(phc) else {
            return true;
        };
        let same_algorithm = hash.algorithm.as_str() == "argon2id" && hash.version == Some(0x13);
        let same_params = Params::try_from(&hash).is_ok_and(|p| {
            p.m_cost() == self.params.m_cost()
                && p.t_cost() == self.params.t_cost()
                && p.p_cost() == self.params.p_cost()
        });
        !(same_algorithm && same_params)
    }

    /// A hash of an already accepted password with the current parameters.
    pub async fn rehash(&self, password: &SecretString) -> Result<String> {
        self.hash_normalized(None, normalize(password.expose_secret()))
            .await
    }

    /// A PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`) with a fresh salt.
    pub async fn hash(&self, password: &NewPassword) -> Result<String> {
        self.hash_queued(None, password).await
    }

    /// `hash`, in a place taken with `queue` (or one taken now).
    pub async fn hash_queued(
        &self,
        place: Option<Place>,
        password: &NewPassword,
    ) -> Result<String> {
        self.hash_normalized(place, password.secret().clone()).await
    }

    async fn hash_normalized(
        &self,
        place: Option<Place>,
        password: SecretString,
    ) -> Result<String> {
        let argon2 = self.argon2.clone();
        self.blocking(place, move |memory| {
            hash_in(&argon2, memory, password.expose_secret().as_bytes())
        })
        .await
    }

    /// Whether `password` matches `phc`. With no hash (no such account) the
    /// dummy hash is verified instead and the answer is `false`, after the
    /// same work.
    pub async fn verify(&self, password: &SecretString, phc: Option<&str>) -> Result<bool> {
        self.verify_queued(None, password, phc).await
    }

    /// `verify`, in a place taken with `queue` (or one taken now).
    pub async fn verify_queued(
        &self,
        place: Option<Place>,
        password: &SecretString,
        phc: Option<&str>,
    ) -> Result<bool> {
        let password = normalize(password.expose_secret());
        let known = phc.is_some();
        let phc = phc.unwrap_or(&self.dummy_hash).to_owned();
        self.verifications.fetch_add(1, Ordering::Relaxed);
        let matched = self
            .blocking(place, move |memory| {
                Ok(verify_in(
                    memory,
                    password.expose_secret().as_bytes(),
                    phc.as_str(),
                ))
            })
            .await?;
        Ok(known && matched)
    }

    /// Hashes waiting for a core.
    pub fn queue_depth(&self) -> usize {
        self.queue.waiting.load(Ordering::Relaxed)
    }

    /// Hashes running.
    pub fn in_flight(&self) -> usize {
        self.queue.running.load(Ordering::Relaxed)
    }

    /// How many verifications ran since start: each login attempt that got
    /// past input checks runs exactly one.
    pub fn verifications(&self) -> u64 {
        self.verifications.load(Ordering::Relaxed)
    }

    /// A place in the queue for a hash, or OVERLOADED at once when the
    /// queue is full. A call that will hash takes it before any other work,
    /// so that an overloaded server refuses it before reading the database.
    pub fn queue(&self) -> Result<Place> {
        if self.queue.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue.max_waiting {
            self.queue.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::Overloaded {
                retry_after: OVERLOAD_RETRY,
            });
        }
        Ok(Place {
            queue: self.queue.clone(),
        })
    }

    /// Runs `work` on a hashing thread, in `place` (or one taken now).
    async fn blocking<T, F>(&self, place: Option<Place>, work: F) -> Result<T>
    where
        F: FnOnce(&mut [Block]) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let place = match place {
            Some(place) => place,
            None => self.queue()?,
        };
        let span = tracing::Span::current();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let queue = self.queue.clone();
        let job: Job = Box::new(move |memory| {
            // Counted as running before it stops counting as waiting, and
            // done before its caller hears the answer.
            let running = Running::start(queue);
            drop(place);
            // A caller that gave up before its turn (a timeout, a client
            // gone) costs no hash. One that gives up later does not stop
            // its hash: no more hashes run at once than there are threads.
            if reply.is_closed() {
                return;
            }
            let result = span.in_scope(|| work(memory));
            drop(running);
            let _ = reply.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| anyhow::anyhow!("the hashing threads have stopped"))?;
        answer.await.context("hashing failed")?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{input::Email, password::PasswordPolicy};

    fn email() -> Email {
        Email::parse("email", "marguerite@example.com").unwrap()
    }

    fn cheap() -> Hasher {
        Hasher::new(
            HashingCost {
                memory_kib: 64,
                iterations: 1,
                parallelism: 1,
            },
            2,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_hash_is_a_phc_string_that_verifies_only_its_password() {
        let hasher = cheap();
        let policy = PasswordPolicy { min_chars: 8 };
        let password = policy
            .check(
                "password",
                &SecretString::from("a sturdy passphrase"),
                &email(),
            )
            .unwrap();
        let phc = hasher.hash(&password).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{phc}");
        let right = SecretString::from("a sturdy passphrase");
        let wrong = SecretString::from("a sturdy passphrasf");
        assert!(hasher.verify(&right, Some(&phc)).await.unwrap());
        assert!(!hasher.verify(&wrong, Some(&phc)).await.unwrap());
    }

    /// Workspaces are reused without being cleared by argon2 itself; the
    /// hashes must still be exactly those of the argon2 crate, both ways,
    /// whatever ran in the workspace before, and whatever memory a stored
    /// hash asks for.
    #[tokio::test]
    async fn hashes_made_in_reused_workspaces_are_standard_argon2id() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let hasher = cheap();
        let password = SecretString::from("a sturdy passphrase");
        for _ in 0..3 {
            let ours = hasher.rehash(&password).await.unwrap();
            Argon2::default()
                .verify_password(b"a sturdy passphrase", ours.as_str())
                .unwrap();
            for memory_kib in [32, 64, 256] {
                let params = Params::new(memory_kib, 2, 1, None).unwrap();
                let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                    .hash_password(b"a sturdy passphrase")
                    .unwrap()
                    .to_string();
                assert!(hasher.verify(&password, Some(&theirs)).await.unwrap());
                let wrong = SecretString::from("a sturdy passphrasf");
                assert!(!hasher.verify(&wrong, Some(&theirs)).await.unwrap());
            }
        }
    }

    /// With a job queued, a workspace goes to the next hash as the last one
    /// left it; the hash must not depend on what was there. With none, it
    /// is wiped.
    #[test]
    fn a_workspace_left_dirty_gives_the_same_hashes_and_an_idle_one_is_wiped() {
        use argon2::PasswordVerifier as _;
        let params = Params::new(64, 2, 1, None).unwrap();
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let (jobs, incoming) = flume::unbounded::<Job>();
        let (results, made) = std::sync::mpsc::channel();
        let (first, second) = (results.clone(), results);
        let argon2_first = argon2.clone();
        jobs.send(Box::new(move |memory| {
            let phc = hash_in(&argon2_first, memory, b"first passphrase").unwrap();
            first.send((phc, false)).unwrap();
        }))
        .unwrap();
        jobs.send(Box::new(move |memory| {
            let dirty = memory.iter().any(|b| b.as_ref().iter().any(|w| *w != 0));
            let phc = hash_in(&argon2, memory, b"second passphrase").unwrap();
            second.send((phc, dirty)).unwrap();
        }))
        .unwrap();
        drop(jobs);
        let left = hash_jobs(incoming, params.block_count());
        let made: Vec<(String, bool)> = made.iter().collect();
        assert_eq!(made.len(), 2);
        assert!(
            made[1].1,
            "a job was queued: the second hash found the first's memory"
        );
        assert_eq!(left.len(), params.block_count());
        assert!(
            left.iter().all(|b| b.as_ref().iter().all(|w| *w == 0)),
            "wiped when no job is queued"
        );
        for ((phc, _), password) in made.iter().zip(["first passphrase", "second passphrase"]) {
            Argon2::default()
                .verify_password(password.as_bytes(), phc.as_str())
                .unwrap();
            let mut dirty = vec![Block::default(); params.block_count()];
            for block in &mut dirty {
                block.as_mut().fill(0x5a5a_5a5a_5a5a_5a5a);
            }
            assert!(verify_in(&mut dirty, password.as_bytes(), phc));
        }
    }

    /// A job that holds its hashing thread until `gate` is dropped or sent
    /// to; `started` hears when it runs.
    fn held(
        hasher: &Arc<Hasher>,
    ) -> (
        tokio::task::JoinHandle<Result<()>>,
        std::sync::mpsc::Sender<()>,
        tokio::sync::oneshot::Receiver<()>,
    ) {
        let (gate, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = tokio::sync::oneshot::channel();
        let hasher = hasher.clone();
        let call = tokio::spawn(async move {
            hasher
                .blocking(None, move |_| {
                    let _ = started.send(());
                    let _ = wait.recv();
                    Ok(())
                })
                .await
        });
        (call, gate, running)
    }

    #[tokio::test]
    async fn no_more_hashes_run_at_once_than_there_are_threads() {
        let hasher = Arc::new(cheap());
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let calls: Vec<_> = (0..40)
            .map(|_| {
                let (hasher, now, most) = (hasher.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    hasher
                        .blocking(None, move |_| {
                            let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(running, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(2));
                            now.fetch_sub(1, Ordering::SeqCst);
                            Ok(())
                        })
                        .await
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} at once on two threads");
        assert_eq!(hasher.queue_depth(), 0);
        assert_eq!(hasher.in_flight(), 0, "each hash is done before it answers");
    }

    #[tokio::test]
    async fn verifying_without_a_hash_does_the_same_work_and_fails() {
        let hasher = cheap();
        let before = hasher.verifications();
        assert!(
            !hasher
                .verify(&SecretString::from("anything at all"), None)
                .await
                .unwrap()
        );
        assert_eq!(hasher.verifications(), before + 1);
    }

    #[tokio::test]
    async fn a_hash_with_other_parameters_needs_a_rehash() {
        let hasher = cheap();
        let stronger = Hasher::new(
            HashingCost {
                memory_kib: 128,
                iterations: 2,
                parallelism: 1,
            },
            1,
        )
        .unwrap();
        let password = SecretString::from("a sturdy passphrase");
        let old = hasher.rehash(&password).await.unwrap();
        assert!(!hasher.needs_rehash(&old));
        assert!(stronger.needs_rehash(&old));
        let new = stronger.rehash(&password).await.unwrap();
        assert!(new.starts_with("$argon2id$v=19$m=128,t=2,p=1$"));
        assert!(stronger.verify(&password, Some(&new)).await.unwrap());
        assert!(hasher.needs_rehash("$2b$12$not-argon2-at-all"));
    }

    #[tokio::test]
    async fn a_full_queue_is_answered_at_once() {
        let hasher = Arc::new(cheap());
        // Hold both threads, then fill the queue.
        let (first, second) = (held(&hasher), held(&hasher));
        first.2.await.unwrap();
        second.2.await.unwrap();
        assert_eq!(hasher.in_flight(), 2);
        let queued: Vec<_> = (0..hasher.queue.max_waiting)
            .map(|_| {
                let hasher = hasher.clone();
                tokio::spawn(async move { hasher.verify(&SecretString::from("x"), None).await })
            })
            .collect();
        while hasher.queue_depth() < hasher.queue.max_waiting {
            tokio::task::yield_now().await;
        }
        let refused = hasher.verify(&SecretString::from("x"), None).await;
        assert!(
            matches!(refused, Err(Error::Overloaded { .. })),
            "{refused:?}"
        );
        drop((first.1, second.1));
        first.0.await.unwrap().unwrap();
        second.0.await.unwrap().unwrap();
        for call in queued {
            assert!(call.await.unwrap().is_ok(), "the queued calls still run");
        }
        assert_eq!(hasher.queue_depth(), 0);
    }

    /// A hash that has started runs to its end when its caller gives up, so
    /// it keeps its thread; one whose caller gave up before its turn never
    /// runs.
    #[tokio::test]
    async fn a_caller_that_gives_up_frees_its_thread_only_when_its_hash_is_done() {
        let hasher = Arc::new(
            Hasher::new(
                HashingCost {
                    memory_kib: 64,
                    iterations: 1,
                    parallelism: 1,
                },
                1,
            )
            .unwrap(),
        );
        let (running, gate, started) = held(&hasher);
        started.await.unwrap();
        running.abort();
        assert!(running.await.unwrap_err().is_cancelled());
        let ran = Arc::new(AtomicUsize::new(0));
        let abandoned = {
            let (hasher, ran) = (hasher.clone(), ran.clone());
            tokio::spawn(async move {
                hasher
                    .blocking(None, move |_| {
                        ran.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        };
        while hasher.queue_depth() == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(
            hasher.in_flight(),
            1,
            "the given-up hash still holds the thread"
        );
        abandoned.abort();
        assert!(abandoned.await.unwrap_err().is_cancelled());
        drop(gate);
        // The next hash runs once the first is done; the abandoned one never.
        assert!(!hasher.verify(&SecretString::from("x"), None).await.unwrap());
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(hasher.queue_depth(), 0);
    }

    #[tokio::test]
    async fn verification_normalizes_like_hashing() {
        let hasher = cheap();
        let policy = PasswordPolicy { min_chars: 8 };
        let stored = policy
            .check(
                "password",
                &SecretString::from("\u{FB01}ne passphrase"),
                &email(),
            )
            .unwrap();
        let phc = hasher.hash(&stored).await.unwrap();
        assert!(
            hasher
                .verify(&SecretString::from("fine passphrase"), Some(&phc))
                .await
                .unwrap()
        );
    }
}
