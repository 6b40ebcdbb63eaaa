//! TLS (`--tls-cert`/`--tls-key`) and mutual TLS (`--tls-client-ca`), with a CA and
//! certificates made in the test by rcgen.

use std::path::{Path, PathBuf};

use clap::Parser;
use kraiter_contacts::api::pb;
use kraiter_contacts::api::pb::contacts_service_client::ContactsServiceClient;
use kraiter_contacts::config::{Cli, TlsArgs};
use kraiter_contacts::startup::Application;
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use crate::conformance;
use crate::support::{Backend, unique_tenant};

type Client = ContactsServiceClient<Channel>;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate and its key, in PEM.
struct Issued {
    cert: String,
    key: String,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-sign the CA");
    Ca { cert, key }
}

fn issue(ca: &Ca, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Issued {
    let key = KeyPair::generate().expect("key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("params");
    params.extended_key_usages = vec![usage];
    let cert = params
        .signed_by(&key, &ca.cert, &ca.key)
        .expect("sign with the CA");
    Issued {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, pem: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pem).expect("write a PEM file");
    path
}

struct TlsApp {
    addr: std::net::SocketAddr,
    key: String,
    ca_pem: String,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A server on TLS; with `client_ca`, it requires client certificates of that CA.
async fn spawn_tls(backend: Backend, ca: &Ca, client_ca: Option<&Ca>) -> TlsApp {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = issue(ca, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let tls = TlsArgs {
        tls_cert: Some(write(dir.path(), "server.pem", &server.cert)),
        tls_key: Some(write(dir.path(), "server.key", &server.key)),
        tls_client_ca: client_ca.map(|ca| write(dir.path(), "client-ca.pem", &ca.cert.pem())),
    };
    let app = build(backend, dir.path(), tls)
        .await
        .expect("a TLS server starts");
    let (app, bootstrap) = app;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    TlsApp {
        addr,
        key: bootstrap.expect("bootstrap key").secret,
        ca_pem: ca.cert.pem(),
        _dir: dir,
        _stop: stop,
    }
}

async fn build(
    backend: Backend,
    dir: &Path,
    tls: TlsArgs,
) -> Result<(Application, Option<kraiter_contacts::startup::BootstrapKey>), String> {
    let database_url = match backend {
        Backend::Postgres => crate::support::postgres::database_url(),
        Backend::Sqlite => format!("sqlite://{}/contacts.db", dir.display()),
    };
    // Parsed like the real command line, so every other flag keeps its default.
    let cli =
        Cli::try_parse_from(["kraiter-contacts", "--listen", "127.0.0.1:0"]).expect("flags parse");
    let mut args = cli.serve;
    args.store.database_url = database_url;
    args.bootstrap_tenant = Some(unique_tenant().to_string());
    args.tls = tls;
    Application::build(&args)
        .await
        .map_err(|err| format!("{err:?}"))
}

async fn connect(
    app: &TlsApp,
    ca_pem: Option<&str>,
    identity: Option<&Issued>,
) -> Result<Client, tonic::transport::Error> {
    let mut endpoint = Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .expect("uri")
        .connect_timeout(std::time::Duration::from_secs(5));
    let mut tls = ClientTlsConfig::new().domain_name("localhost");
    if let Some(ca) = ca_pem {
        tls = tls.ca_certificate(Certificate::from_pem(ca));
    }
    if let Some(identity) = identity {
        tls = tls.identity(Identity::from_pem(&identity.cert, &identity.key));
    }
    endpoint = endpoint.tls_config(tls)?;
    Ok(ContactsServiceClient::new(endpoint.connect().await?))
}

async fn create(client: &mut Client, key: &str) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::CreateContactRequest {
        email: format!("tls-{}@example.com", ulid::Ulid::new()).to_lowercase(),
        properties: None,
        ..Default::default()
    });
    let bearer = format!("Bearer {key}").parse().expect("metadata");
    request.metadata_mut().insert("authorization", bearer);
    client.create_contact(request).await.map(drop)
}

async fn tls_serves_clients_that_trust_its_ca_and_only_them(backend: Backend) {
    let ca = ca("kraiter test CA");
    let app = spawn_tls(backend, &ca, None).await;
    let mut client = connect(&app, Some(&app.ca_pem), None)
        .await
        .expect("a client trusting the CA connects");
    create(&mut client, &app.key)
        .await
        .expect("a call over TLS");

    let stranger = self::ca("some other CA");
    let refused = match connect(&app, Some(&stranger.cert.pem()), None).await {
        Ok(mut client) => create(&mut client, &app.key).await.is_err(),
        Err(_) => true,
    };
    assert!(
        refused,
        "a client that does not trust the server's CA gets nowhere"
    );

    // Plaintext to the TLS port fails: nothing is served in the clear.
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect_timeout(std::time::Duration::from_secs(5));
    let failed = match plain.connect().await {
        Ok(channel) => ContactsServiceClient::new(channel)
            .get_contact(pb::GetContactRequest { id: "x".into() })
            .await
            .is_err(),
        Err(_) => true,
    };
    assert!(failed, "plaintext to the TLS port");
}

async fn mutual_tls_requires_a_client_certificate_from_the_client_ca(backend: Backend) {
    let server_ca = ca("server CA");
    let client_ca = ca("client CA");
    let app = spawn_tls(backend, &server_ca, Some(&client_ca)).await;
    let good = issue(
        &client_ca,
        &["billing"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let mut client = connect(&app, Some(&app.ca_pem), Some(&good))
        .await
        .expect("a client with a certificate of the client CA connects");
    create(&mut client, &app.key)
        .await
        .expect("a call over mutual TLS");

    let rogue_ca = ca("rogue CA");
    let rogue = issue(&rogue_ca, &["billing"], ExtendedKeyUsagePurpose::ClientAuth);
    for (what, identity) in [
        ("no client certificate", None),
        ("a rogue CA's", Some(&rogue)),
    ] {
        let refused = match connect(&app, Some(&app.ca_pem), identity).await {
            Ok(mut client) => create(&mut client, &app.key).await.is_err(),
            Err(_) => true,
        };
        assert!(refused, "{what} is refused");
    }
}

conformance!(
    tls_serves_clients_that_trust_its_ca_and_only_them,
    mutual_tls_requires_a_client_certificate_from_the_client_ca,
);

#[tokio::test]
async fn start_up_fails_on_missing_or_mismatched_tls_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = ca("CA");
    let one = issue(&ca, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let other = issue(&ca, &["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let cases = [
        (
            "missing certificate",
            TlsArgs {
                tls_cert: Some(dir.path().join("nope.pem")),
                tls_key: Some(write(dir.path(), "a.key", &one.key)),
                tls_client_ca: None,
            },
        ),
        (
            "key of another certificate",
            TlsArgs {
                tls_cert: Some(write(dir.path(), "b.pem", &one.cert)),
                tls_key: Some(write(dir.path(), "b.key", &other.key)),
                tls_client_ca: None,
            },
        ),
        (
            "not PEM at all",
            TlsArgs {
                tls_cert: Some(write(dir.path(), "c.pem", "hello")),
                tls_key: Some(write(dir.path(), "c.key", "world")),
                tls_client_ca: None,
            },
        ),
    ];
    for (what, tls) in cases {
        let result = build(Backend::Sqlite, dir.path(), tls).await;
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{what}: started anyway"));
        assert!(err.contains("Tls"), "{what}: {err}");
    }
}
