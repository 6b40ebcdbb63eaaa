//! `spawn_app`: a real server on a random loopback port, on a real database.

use kraiter_contacts::api::pb::activity_service_client::ActivityServiceClient;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use kraiter_contacts::config::{DatabasePooler, LogFormat, ServeArgs, StoreArgs};
use kraiter_contacts::domain::TenantId;
use kraiter_contacts::startup::Application;
use kraiter_contacts::store::DynStore;
use tempfile::TempDir;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use super::postgres;

/// The backends every conformance test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = ContactsServiceClient<InterceptedService<Channel, Bearer>>;
pub type Activity = ActivityServiceClient<InterceptedService<Channel, Bearer>>;

pub struct TestApp {
    pub key: String,
    pub addr: std::net::SocketAddr,
    /// The database the app runs on (a file of its own on SQLite), reached directly
    /// even when the app goes through PgBouncer.
    pub database_url: String,
    /// Where `/metrics` is served, when the test asked for `metrics_listen`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub store: DynStore,
    pub channel: Channel,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: Option<TempDir>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// `spawn_app` with settings changed by `configure` (limits, pool size, TLS...).
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut ServeArgs)) -> TestApp {
    let (url, dir) = match backend {
        Backend::Postgres => (postgres::database_url(), None),
        Backend::Sqlite => {
            let dir = tempfile::tempdir().expect("create a temporary directory");
            let url = format!("sqlite://{}/contacts.db", dir.path().display());
            (url, Some(dir))
        }
    };
    let mut args = ServeArgs {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        store: StoreArgs {
            database_url: url,
            db_max_connections: 8,
            db_acquire_timeout: std::time::Duration::from_secs(10),
            database_pooler: DatabasePooler::None,
            // The default: creates coalesced, one statement in flight.
            db_write_batches: 1,
        },
        log_format: LogFormat::Text,
        metrics_listen: None,
        // Tests make their own tenants; no first-start key.
        bootstrap_tenant: Some(unique_tenant().to_string()),
        health_interval: std::time::Duration::from_millis(200),
        shutdown_grace: std::time::Duration::from_secs(5),
        limits: Default::default(),
        tls: Default::default(),
        telemetry: Default::default(),
        replicas: Default::default(),
    };
    configure(&mut args);
    if backend == Backend::Postgres && super::replica_reads::active() {
        super::replica_reads::route(&mut args).await;
    }
    let database_url = args.store.database_url.clone();
    if backend == Backend::Postgres && super::pgbouncer::active() {
        super::pgbouncer::route(&mut args).await;
    }
    let (app, bootstrap) = Application::build(&args).await.expect("application starts");
    let bootstrap = bootstrap.expect("a bootstrap tenant was asked for");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr();
    let store = app.store();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("valid uri")
        .connect()
        .await
        .expect("connect to the test server");
    TestApp {
        key: bootstrap.secret,
        addr,
        database_url,
        metrics_addr,
        store,
        channel,
        stop: Some(stop),
        _dir: dir,
    }
}

/// For `spawn_app_with`: health probes the database once, at start, and then not for
/// an hour, so a test that reads the pool's usage sees only its own calls.
pub fn quiet_health(args: &mut ServeArgs) {
    args.health_interval = std::time::Duration::from_secs(3600);
}

/// A tenant name no other test uses, so tests can share one PostgreSQL database.
pub fn unique_tenant() -> TenantId {
    let name = format!("t-{}", ulid::Ulid::new().to_string().to_lowercase());
    TenantId::parse(&name).expect("valid tenant name")
}

impl TestApp {
    /// The crate's own client (`kraiter_contacts::client`), authenticated as this
    /// app's tenant.
    pub fn sdk(&self) -> kraiter_contacts::client::Client {
        kraiter_contacts::client::Client::new(self.channel.clone(), &self.key)
            .expect("a key is valid metadata")
    }

    /// A client authenticated as this app's tenant.
    pub fn client(&self) -> Client {
        self.client_with_key(Some(&self.key))
    }

    /// A client authenticated as this app's tenant, on a connection of its own
    /// (the others share `channel`).
    pub async fn client_on_own_connection(&self) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("valid uri")
            .connect()
            .await
            .expect("connect to the test server");
        let value = format!("Bearer {}", self.key)
            .parse()
            .expect("a key is valid metadata");
        ContactsServiceClient::with_interceptor(channel, Bearer(Some(value)))
    }

    pub fn client_with_key(&self, key: Option<&str>) -> Client {
        let value = key.map(|key| {
            format!("Bearer {key}")
                .parse()
                .expect("a key is valid metadata")
        });
        ContactsServiceClient::with_interceptor(self.channel.clone(), Bearer(value))
    }

    /// An ActivityService client authenticated as this app's tenant.
    pub fn activity(&self) -> Activity {
        self.activity_with_key(&self.key)
    }

    pub fn activity_with_key(&self, key: &str) -> Activity {
        let value = format!("Bearer {key}")
            .parse()
            .expect("a key is valid metadata");
        ActivityServiceClient::with_interceptor(self.channel.clone(), Bearer(Some(value)))
    }

    /// A key of a second, fresh tenant on the same server.
    pub async fn other_tenant_key(&self) -> String {
        let (_, key) = kraiter_contacts::keys::create(self.store.as_ref(), &unique_tenant())
            .await
            .expect("create a second tenant");
        key
    }

    /// A client of a second, fresh tenant on the same server.
    pub async fn other_tenant_client(&self) -> Client {
        let key = self.other_tenant_key().await;
        self.client_with_key(Some(&key))
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Asserts a call failed with `code` and with `reason` in its ErrorInfo.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    reason: &str,
    what: &str,
) -> Status {
    use tonic_types::StatusExt;
    let status = match result {
        Ok(value) => panic!("{what}: expected {code:?}, got Ok({value:?})"),
        Err(status) => status,
    };
    assert_eq!(status.code(), code, "{what}: {status:?}");
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("{what}: no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "{what}");
    assert_eq!(info.domain, kraiter_contacts::api::ERROR_DOMAIN, "{what}");
    status
}

/// No key, SQL, driver text, file path or panic in what the caller reads.
pub fn assert_clean_message(status: &Status, key: &str, what: &str) {
    let message = status.message();
    let lower = message.to_lowercase();
    assert!(!message.contains(key), "{what}: the key leaked: {message}");
    for leak in [
        "select ",
        "insert ",
        "update ",
        "delete from",
        "sqlx",
        "sqlite",
        "postgres",
        "pg_",
        "panicked",
        "backtrace",
        ".rs:",
        "src/",
        "error returned from database",
        "syntax error",
        "constraint",
    ] {
        assert!(
            !lower.contains(leak),
            "{what}: `{leak}` in message {message:?}"
        );
    }
    assert!(
        message.len() < 1024,
        "{what}: a message of {} bytes",
        message.len()
    );
}

/// Generates one `#[tokio::test]` per backend for each listed `async fn(Backend)`,
/// and a third, `pgbouncer::<name>`, on PostgreSQL through PgBouncer in transaction
/// mode (`support::pgbouncer`).
#[macro_export]
macro_rules! conformance {
    // `; replicated`: the same tests a fourth time through a read replica
    // (`replicated!`), without naming them twice.
    ($($name:ident),* $(,)? ; replicated) => {
        $crate::conformance!($($name),*);
        $crate::replicated!($($name),*);
    };
    ($($name:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            )*
        }
        mod pgbouncer {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::pgbouncer::scope(
                        super::$name($crate::support::Backend::Postgres),
                    )
                    .await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await
                }
            )*
        }
    };
}

/// For the list, search, filter and timeline suites: each test a fourth time, as
/// `replica::<name>`, with its servers' streamed reads and counts on a hot standby
/// (`support::replica_reads`). Next to `conformance!`, which gives the other three.
#[macro_export]
macro_rules! replicated {
    ($($name:ident),* $(,)?) => {
        mod replica {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    $crate::support::replica_reads::scope(
                        super::$name($crate::support::Backend::Postgres),
                    )
                    .await
                }
            )*
        }
    };
}
