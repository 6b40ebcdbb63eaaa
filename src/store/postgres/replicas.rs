//! Read replicas (`--database-read-url`): hot standbys of the primary that take the
//! heavy reads (`SqlStore::read_heavy`: the streamed lists' pages and the counts).
//!
//! A task checks every replica each `check_interval` on a connection of its own
//! (outside the replica's pool, so a busy pool cannot make a healthy replica look
//! dead): reachable, still in recovery (a promoted or mistaken URL is no replica),
//! and how far its replay trails the primary. The lag is measured against the
//! primary's WAL position, not `pg_last_xact_replay_timestamp()`, which on an idle
//! primary grows without the replica missing anything: each check samples the
//! primary's `pg_current_wal_lsn()`, and a replica that has not replayed up to the
//! sample taken at time T lags by at least `now - T` (lag 0 when it replayed the
//! latest). A replica unreachable, out of recovery, or lagging past `max_lag` is
//! skipped until a check finds it fit again; one whose statement fails with
//! UNAVAILABLE is skipped at once, and the read runs again on the next replica or
//! the primary.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};

use super::conns::Conns;
use crate::store::{ConnectOptions, ReplicaState, StoreError, StoreResult};

/// Longest a check's connect and query may take before the replica counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// Most samples of the primary's WAL position kept, whatever `max_lag` asks.
const MAX_SAMPLES: usize = 4096;

pub(crate) struct Replicas {
    members: Vec<Arc<Replica>>,
    /// Where the next read starts among the usable replicas, so reads spread.
    next: AtomicUsize,
}

pub(crate) struct Replica {
    name: String,
    options: PgConnectOptions,
    pub conns: Conns,
    health: Mutex<Health>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Health {
    usable: bool,
    lag: Option<Duration>,
    /// False until the first check, so its outcome is logged whatever it is.
    checked: bool,
}

impl Replicas {
    /// Opens a pool (lazily) for each URL and checks each replica once before
    /// returning, so the first reads go where they should. A replica down at
    /// start-up is not an error: it is skipped until a check reaches it. A URL that
    /// does not parse is.
    pub async fn start(primary: &str, options: &ConnectOptions) -> StoreResult<Option<Arc<Self>>> {
        let settings = &options.replicas;
        if settings.urls.is_empty() {
            return Ok(None);
        }
        let primary = PgConnectOptions::from_str(primary)
            .map_err(|err| StoreError::Config(format!("invalid postgres url: {err}")))?;
        let mut members = Vec::with_capacity(settings.urls.len());
        for url in &settings.urls {
            let parsed = PgConnectOptions::from_str(url)
                .map_err(|err| StoreError::Config(format!("invalid --database-read-url: {err}")))?;
            let name = format!(
                "{}:{}/{}",
                parsed.get_host(),
                parsed.get_port(),
                parsed.get_database().unwrap_or_default()
            );
            members.push(Arc::new(Replica {
                name,
                conns: Conns::lazy(url, options)?,
                options: parsed,
                health: Mutex::new(Health::default()),
            }));
        }
        let replicas = Arc::new(Self {
            members,
            next: AtomicUsize::new(0),
        });
        let mut checker = Checker {
            primary,
            primary_conn: None,
            samples: VecDeque::new(),
            keep: settings.max_lag * 2 + settings.check_interval * 2,
            max_lag: settings.max_lag,
            links: replicas
                .members
                .iter()
                .map(|replica| Link {
                    replica: Arc::downgrade(replica),
                    conn: None,
                })
                .collect(),
        };
        checker.check().await;
        let interval = settings.check_interval;
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    if !checker.check().await {
                        break;
                    }
                }
            });
        }
        Ok(Some(replicas))
    }

    /// The replicas usable now, starting at a different one each call.
    pub fn usable(&self) -> Vec<Arc<Replica>> {
        let usable: Vec<Arc<Replica>> = self
            .members
            .iter()
            .filter(|replica| replica.health().usable)
            .cloned()
            .collect();
        if usable.is_empty() {
            return usable;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % usable.len();
        let mut rotated = usable;
        rotated.rotate_left(start);
        rotated
    }

    pub fn states(&self) -> Vec<ReplicaState> {
        self.members
            .iter()
            .map(|replica| {
                let health = replica.health();
                ReplicaState {
                    name: replica.name.clone(),
                    usable: health.usable,
                    lag: health.lag,
                }
            })
            .collect()
    }
}

impl Replica {
    fn health(&self) -> Health {
        *self
            .health
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Records what a check (or a failed read) found; logs a change, and the first
    /// check's outcome, with `why`.
    fn set_health(&self, health: Health, why: &str) {
        let health = Health {
            checked: true,
            ..health
        };
        let before = std::mem::replace(
            &mut *self
                .health
                .lock()
                .unwrap_or_else(|poison| poison.into_inner()),
            health,
        );
        if before.usable != health.usable || !before.checked {
            let lag_ms = health.lag.map(|lag| lag.as_millis() as u64);
            if health.usable {
                tracing::info!(replica = %self.name, lag_ms, "read replica usable");
            } else {
                tracing::warn!(replica = %self.name, lag_ms, why, "read replica skipped");
            }
        }
    }

    /// A read on it failed with UNAVAILABLE: skipped until a check finds it fit.
    pub fn failed(&self, err: &sqlx::Error) {
        let lag = self.health().lag;
        let why = format!("a read failed ({err}); read elsewhere");
        self.set_health(
            Health {
                usable: false,
                lag,
                checked: true,
            },
            &why,
        );
    }
}

/// The checks' own connections and the primary's recent WAL positions.
struct Checker {
    primary: PgConnectOptions,
    primary_conn: Option<PgConnection>,
    /// `(position, when read)`, oldest first.
    samples: VecDeque<(i64, Instant)>,
    /// How long a sample is kept: longer than `max_lag`, so a replica behind every
    /// sample kept is known to lag past it.
    keep: Duration,
    max_lag: Duration,
    links: Vec<Link>,
}

struct Link {
    replica: Weak<Replica>,
    conn: Option<PgConnection>,
}

impl Checker {
    /// Checks every replica; false once the store is gone.
    async fn check(&mut self) -> bool {
        let now = Instant::now();
        match position(&self.primary, &mut self.primary_conn, PRIMARY_POSITION).await {
            Ok(Some(lsn)) => self.samples.push_back((lsn, now)),
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "replica check: primary position unknown"),
        }
        while self.samples.len() > MAX_SAMPLES
            || self.samples.len() > 1
                && self
                    .samples
                    .front()
                    .is_some_and(|(_, at)| at.elapsed() > self.keep)
        {
            self.samples.pop_front();
        }
        let mut alive = false;
        for link in &mut self.links {
            let Some(replica) = link.replica.upgrade() else {
                continue;
            };
            alive = true;
            let found = position(&replica.options, &mut link.conn, REPLICA_POSITION).await;
            let (health, why) = match found {
                Ok(Some(replayed)) => {
                    let lag = lag_of(&self.samples, replayed);
                    let health = Health {
                        usable: lag <= self.max_lag,
                        lag: Some(lag),
                        checked: true,
                    };
                    (health, "its replay lags past --max-replica-lag".to_owned())
                }
                Ok(None) => (Health::default(), "not in recovery: no standby".to_owned()),
                Err(err) => (Health::default(), format!("unreachable: {err}")),
            };
            replica.set_health(health, &why);
        }
        alive
    }
}

/// The primary's WAL position now.
const PRIMARY_POSITION: &str = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint";
/// How far a standby has replayed; NULL when it is not in recovery.
const REPLICA_POSITION: &str = "SELECT CASE WHEN pg_is_in_recovery() \
     THEN (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint END";

/// Runs `sql` (one bigint or NULL) on `conn`, connecting first if need be; a failed
/// connection is dropped, to be opened again on the next check.
async fn position(
    options: &PgConnectOptions,
    conn: &mut Option<PgConnection>,
    sql: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let run = async {
        if conn.is_none() {
            *conn = Some(PgConnection::connect_with(options).await?);
        }
        let open = conn.as_mut().expect("connected above");
        sqlx::query_scalar::<_, Option<i64>>(sql)
            .fetch_one(open)
            .await
    };
    let result = match tokio::time::timeout(CHECK_TIMEOUT, run).await {
        Ok(result) => result,
        Err(_) => Err(sqlx::Error::PoolTimedOut),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// How long ago the primary had WAL that a replica which replayed up to `replayed`
/// lacks: the age of the oldest sample past it (none past it: no lag).
fn lag_of(samples: &VecDeque<(i64, Instant)>, replayed: i64) -> Duration {
    samples
        .iter()
        .find(|(lsn, _)| *lsn > replayed)
        .map_or(Duration::ZERO, |(_, at)| at.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_position_not_replayed() {
        let now = Instant::now();
        let samples: VecDeque<(i64, Instant)> = [
            (100, now - Duration::from_secs(9)),
            (200, now - Duration::from_secs(6)),
            (300, now - Duration::from_secs(3)),
        ]
        .into();
        assert_eq!(lag_of(&samples, 300), Duration::ZERO, "caught up");
        assert_eq!(
            lag_of(&samples, 400),
            Duration::ZERO,
            "ahead of the samples"
        );
        let lag = lag_of(&samples, 150);
        assert!(
            lag >= Duration::from_secs(6) && lag < Duration::from_secs(7),
            "{lag:?}"
        );
        assert!(lag_of(&samples, 0) >= Duration::from_secs(9));
        assert_eq!(lag_of(&VecDeque::new(), 5), Duration::ZERO);
    }
}
