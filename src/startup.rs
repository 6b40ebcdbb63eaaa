//! Builds the server: store, services, health, reflection; runs it until a
//! shutdown future resolves, then drains.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::server::HealthReporter;

use crate::api::pb::activity_service_server::ActivityServiceServer;
use crate::api::wire::server::contacts_service_server::ContactsServiceServer;
use crate::api::{
    AccessControl, ActivityApi, ContactsApi, EdgeLayer, RateLimiter, StreamLimits, Streams, pb,
};
use crate::config::{LimitArgs, ServeArgs};
use crate::domain::TenantId;
use crate::store::{self, DynStore, StoreError};

/// Name under which health reports the contacts service (the empty name covers the server).
pub const CONTACTS_SERVICE_NAME: &str = "kraiter.contacts.v1.ContactsService";
pub const ACTIVITY_SERVICE_NAME: &str = "kraiter.contacts.v1.ActivityService";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot open the database")]
    Store(#[from] StoreError),
    #[error("cannot listen on `{addr}`")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid bootstrap tenant")]
    Tenant(#[from] crate::domain::ValidationError),
    #[error("server failed")]
    Serve(#[from] tonic::transport::Error),
    #[error("cannot set up TLS")]
    Tls(#[from] crate::tls::TlsError),
}

pub struct Application {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    store: DynStore,
    health_interval: Duration,
    shutdown_grace: Duration,
    limits: LimitArgs,
    tls: Option<tonic::transport::ServerTlsConfig>,
    cursor_key: crate::domain::CursorKey,
}

/// A key minted at start-up, to show the operator once.
pub struct BootstrapKey {
    pub tenant: TenantId,
    pub secret: String,
}

/// The request size limit, and the compression a service accepts and sends. A macro
/// because the generated servers share no trait with these methods.
macro_rules! with_codec_settings {
    ($server:expr, $max_message_size:expr) => {
        $server
            .max_decoding_message_size($max_message_size)
            .accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
    };
}

impl Application {
    /// Opens and migrates the store and binds the listener (port 0 picks a free port).
    pub async fn build(args: &ServeArgs) -> Result<(Self, Option<BootstrapKey>), StartupError> {
        let tls = crate::tls::server_config(&args.tls)?;
        let mut options = args.store.connect_options();
        options.replicas = args.replicas.options();
        let store = store::connect(&args.store.database_url, &options).await?;
        let bootstrap = bootstrap(&store, args).await?;
        let cursor_key = crate::domain::CursorKey::from_bytes(store.cursor_secret().await?);
        let listener =
            TcpListener::bind(args.listen)
                .await
                .map_err(|source| StartupError::Bind {
                    addr: args.listen,
                    source,
                })?;
        let metrics_listener = match args.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartupError::Bind { addr, source })?,
            ),
            None => None,
        };
        let app = Self {
            listener,
            metrics_listener,
            store,
            health_interval: args.health_interval,
            shutdown_grace: args.shutdown_grace,
            limits: args.limits.clone(),
            tls,
            cursor_key,
        };
        Ok((app, bootstrap))
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn store(&self) -> DynStore {
        self.store.clone()
    }

    /// Where `/metrics` is served, when `--metrics-listen` asked for it.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|listener| {
            listener
                .local_addr()
                .expect("a bound listener has an address")
        })
    }

    /// Serves until `shutdown` resolves; then reports NOT_SERVING, stops accepting,
    /// and gives in-flight calls `shutdown_grace` to finish.
    pub async fn run_until(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let (reporter, health_service) = tonic_health::server::health_reporter();
        // Every name is known from the start, so a Watch never sees "unknown service".
        report(&reporter, ServingStatus::NotServing).await;
        // An AbortOnDrop, so an early return (a TLS configuration that fails) leaves
        // no health watcher behind.
        let watcher = AbortOnDrop(tokio::spawn(watch_database(
            self.store.clone(),
            reporter.clone(),
            self.health_interval,
        )));
        let _purge = AbortOnDrop(tokio::spawn(purge_expired(
            self.store.clone(),
            self.limits.request_id_retention,
            Purge::RequestIds,
        )));
        let _purge_changes = AbortOnDrop(tokio::spawn(purge_expired(
            self.store.clone(),
            self.limits.change_retention,
            Purge::Changes,
        )));
        let _fold_counts = AbortOnDrop(tokio::spawn(fold_counts(self.store.clone())));
        let _metrics = self.metrics_listener.take().map(|listener| {
            AbortOnDrop(tokio::spawn(crate::metrics::serve(
                listener,
                self.store.clone(),
            )))
        });
        let grace = self.shutdown_grace;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut server = tokio::spawn(self.serve(health_service, stop_rx)?);

        tokio::select! {
            result = &mut server => {
                drop(watcher);
                return served(result);
            }
            () = shutdown => {}
        }
        tracing::info!("shutting down: draining in-flight calls");
        drop(watcher);
        report(&reporter, ServingStatus::NotServing).await;
        let _ = stop_tx.send(());
        drain(server, grace).await?;
        tracing::info!("stopped");
        Ok(())
    }

    /// The server with every service behind the edge layer, serving the listener until
    /// `stop` fires (or its sender is dropped).
    fn serve(
        self,
        health_service: HealthServer<impl Health>,
        stop: oneshot::Receiver<()>,
    ) -> Result<impl Future<Output = Result<(), tonic::transport::Error>>, StartupError> {
        let (contacts, activity) = self.services();
        let mut builder =
            Server::builder().max_concurrent_streams(self.limits.max_concurrent_streams);
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls)?;
        }
        let server = builder
            .layer(EdgeLayer {
                request_timeout: self.limits.request_timeout,
                max_message_size: self.limits.max_message_size,
                response_compression: self.limits.response_compression,
            })
            .add_service(health_service)
            .add_service(reflection().build_v1().expect(DESCRIPTORS_VALID))
            .add_service(reflection().build_v1alpha().expect(DESCRIPTORS_VALID))
            .add_service(contacts)
            .add_service(activity)
            // TCP_NODELAY: without it small responses wait for the peer's delayed ACK,
            // which dominates a call's latency at low concurrency (see BENCHMARKS.md);
            // `Server::tcp_nodelay` does not apply to a listener passed in.
            .serve_with_incoming_shutdown(
                TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                async {
                    let _ = stop.await;
                },
            );
        Ok(server)
    }

    /// The two API services, with one access control for both: a tenant's budget and
    /// the caches of keys cover all its calls.
    fn services(
        &self,
    ) -> (
        ContactsServiceServer<ContactsApi>,
        ActivityServiceServer<ActivityApi>,
    ) {
        let limits = &self.limits;
        let auth = AccessControl::new(
            self.store.clone(),
            RateLimiter::from_config(limits.rate_limit_rps, limits.rate_limit_burst),
            RateLimiter::new(
                limits.unknown_key_lookups_rps,
                limits.unknown_key_lookups_rps.saturating_mul(10),
            ),
        );
        let stream_limits = StreamLimits {
            max_page_bytes: limits.max_page_bytes,
            max_streams: limits.max_streams,
            max_streams_per_tenant: limits.max_streams_per_tenant,
            max_watchers: limits.max_watchers,
            max_watchers_per_tenant: limits.max_watchers_per_tenant,
            key_recheck: limits.stream_key_recheck,
            max_message_size: limits.max_message_size,
            import_depth: limits.import_depth,
        };
        let streams = Streams::new(stream_limits, auth.clone());
        let contacts = ContactsServiceServer::new(ContactsApi::new(
            self.store.clone(),
            auth.clone(),
            streams,
            self.cursor_key.clone(),
        ));
        let activity = ActivityServiceServer::new(ActivityApi::new(self.store.clone(), auth));
        let max = self.limits.max_message_size;
        (
            with_codec_settings!(contacts, max),
            with_codec_settings!(activity, max),
        )
    }
}

/// Waits up to `grace` for a server that stopped accepting to finish its calls, then
/// closes the ones left.
async fn drain(
    mut server: JoinHandle<Result<(), tonic::transport::Error>>,
    grace: Duration,
) -> Result<(), StartupError> {
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => served(result)?,
        Err(_) => {
            tracing::warn!("drain time exceeded; closing remaining calls");
            server.abort();
        }
    }
    Ok(())
}

/// The server task's outcome: its own error, or its panic carried on. A task
/// cancelled because its runtime is shutting down (a test's that failed, say) has
/// simply ended: a second panic there would only hide the first.
fn served(
    result: Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<(), StartupError> {
    match result {
        Ok(served) => Ok(served?),
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(_) => Ok(()),
    }
}

const DESCRIPTORS_VALID: &str = "the embedded descriptor sets are valid";

/// Reflection over our services, health, and google.rpc's ErrorInfo, BadRequest and
/// RetryInfo (so grpcurl can decode error details). Built once per reflection version:
/// a builder is consumed by `build_v1` or `build_v1alpha`.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Aborts a background task when dropped, so it ends with the server either way.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a purge deletes: request ids (remembered requests and the tombstones of
/// erased ones), or changes of the feed (each tenant's watermark moves with them, so
/// an older token is refused, not silently resumed past a gap).
#[derive(Clone, Copy)]
enum Purge {
    RequestIds,
    Changes,
}

/// Forgets what `purge` names older than `retention`, in batches, every tenth of it
/// (between 100 ms and 10 minutes), so its tables stay as large as the retention
/// window makes them, not larger.
async fn purge_expired(store: DynStore, retention: Duration, purge: Purge) {
    const BATCH: u32 = 10_000;
    let every = (retention / 10).clamp(Duration::from_millis(100), Duration::from_secs(600));
    let what = match purge {
        Purge::RequestIds => "request ids",
        Purge::Changes => "contact changes",
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(before) = chrono::Duration::from_std(retention)
            .ok()
            .and_then(|retention| crate::domain::now().checked_sub_signed(retention))
        else {
            continue;
        };
        loop {
            let purged = match purge {
                Purge::RequestIds => store.purge_requests(before, BATCH).await,
                Purge::Changes => store.purge_changes(before, BATCH).await,
            };
            match purged {
                Ok(purged) if purged >= u64::from(BATCH) => continue,
                Ok(purged) => {
                    if purged > 0 {
                        tracing::debug!(purged, what, "expired rows purged");
                    }
                    break;
                }
                Err(err) => {
                    tracing::warn!(error = %err, what, "purging expired rows failed");
                    break;
                }
            }
        }
    }
}

/// Every minute, folds the contact counters' per-process rows into each tenant's
/// base row (`Backend::fold_counts`), so the whole-tenant count sums a few rows
/// however many database sessions have written.
async fn fold_counts(store: DynStore) {
    const BATCH: u32 = 10_000;
    loop {
        tokio::time::sleep(Duration::from_secs(60)).await;
        loop {
            match store.fold_counts(BATCH).await {
                Ok(folded) if folded >= u64::from(BATCH) => continue,
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, "folding the contact counters failed");
                    break;
                }
            }
        }
    }
}

/// Sets the status of the server (`""`) and of each service.
async fn report(reporter: &HealthReporter, status: ServingStatus) {
    for name in ["", CONTACTS_SERVICE_NAME, ACTIVITY_SERVICE_NAME] {
        reporter.set_service_status(name, status).await;
    }
}

/// SERVING only while the database answers.
async fn watch_database(store: DynStore, reporter: HealthReporter, interval: Duration) {
    let mut last = None;
    loop {
        let healthy = matches!(
            tokio::time::timeout(interval.max(Duration::from_millis(100)), store.ping()).await,
            Ok(Ok(()))
        );
        if last != Some(healthy) {
            let status = if healthy {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            if healthy {
                tracing::info!("database reachable: serving");
            } else {
                tracing::warn!("database unreachable: not serving");
            }
            report(&reporter, status).await;
            last = Some(healthy);
        }
        tokio::time::sleep(interval).await;
    }
}

/// On a new embedded database, tenant `default` and its first key; elsewhere only
/// what `--bootstrap-tenant` asks for, and only on the start that creates the tenant:
/// a key is printed once, never again on a restart with the flag still set.
async fn bootstrap(
    store: &DynStore,
    args: &ServeArgs,
) -> Result<Option<BootstrapKey>, StartupError> {
    let tenant = match &args.bootstrap_tenant {
        Some(name) => TenantId::parse(name)?,
        None if args.store.is_embedded() => {
            // The first start of an embedded database is the one with no keys at all.
            if !store.list_api_keys(None).await?.is_empty() {
                return Ok(None);
            }
            TenantId::parse("default")?
        }
        None => return Ok(None),
    };
    let created = crate::keys::create_first(store.as_ref(), &tenant).await?;
    Ok(created.map(|(_, secret)| BootstrapKey { tenant, secret }))
}
