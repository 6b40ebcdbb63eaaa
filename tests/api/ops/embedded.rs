//! The real binary's first start on an empty embedded database, later starts, and
//! start-up against PostgreSQL (which creates nothing unless asked).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kraiter_contacts::api::pb;

struct Server {
    child: Child,
    /// Everything the process wrote to stderr up to its "listening" line.
    banner: String,
    addr: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Starts `kraiter-contacts` and reads stderr until it listens (no sleeping).
fn start(database_url: &str, extra: &[&str]) -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_kraiter-contacts"))
        .args(["serve", "--listen", &addr])
        .args(extra)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kraiter-contacts");
    let mut reader = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut banner = String::new();
    loop {
        let mut line = String::new();
        let read = reader.read_line(&mut line).expect("read stderr");
        assert!(read > 0, "the server exited before listening:\n{banner}");
        banner.push_str(&line);
        if line.contains("listening") {
            break;
        }
    }
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines() {});
    Server {
        child,
        banner,
        addr,
    }
}

impl Server {
    /// SIGTERM, then the exit status (graceful shutdown exits 0).
    fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success());
        self.child.wait().expect("wait")
    }
}

fn key_in(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == '\'')
        .find(|word| word.starts_with("kr_") && word.len() > 20)
        .map(str::to_owned)
}

async fn lookup_with(
    addr: &str,
    key: &str,
) -> Result<pb::GetContactByEmailResponse, tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut client = pb::contacts_service_client::ContactsServiceClient::new(channel);
    let mut request = tonic::Request::new(pb::GetContactByEmailRequest {
        email: "a@example.com".into(),
    });
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {key}").parse().expect("metadata"),
    );
    client
        .get_contact_by_email(request)
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_embedded_start_prints_one_working_key_and_later_starts_print_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/nested/dir/contacts.db", dir.path().display());

    let first = start(&url, &[]);
    let key =
        key_in(&first.banner).unwrap_or_else(|| panic!("a key in the banner:\n{}", first.banner));
    assert!(
        first
            .banner
            .contains("grpcurl -plaintext -H 'authorization: Bearer"),
        "{}",
        first.banner
    );
    assert!(
        first.banner.contains("tenant `default`"),
        "{}",
        first.banner
    );
    lookup_with(&first.addr, &key)
        .await
        .expect("the printed key works");
    assert!(first.terminate().success(), "SIGTERM exits cleanly");
    assert!(
        dir.path().join("nested/dir/contacts.db").exists(),
        "the database file was created"
    );

    let second = start(&url, &[]);
    assert_eq!(
        key_in(&second.banner),
        None,
        "later starts print no key:\n{}",
        second.banner
    );
    lookup_with(&second.addr, &key)
        .await
        .expect("the key survives restarts");
    assert!(second.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_start_creates_nothing_unless_asked() {
    let url = crate::support::postgres::database_url();
    let plain = start(&url, &[]);
    assert_eq!(
        key_in(&plain.banner),
        None,
        "no key on PostgreSQL by default:\n{}",
        plain.banner
    );
    assert!(plain.terminate().success());

    let tenant = crate::support::unique_tenant();
    let asked = start(&url, &["--bootstrap-tenant", tenant.as_str()]);
    let key =
        key_in(&asked.banner).unwrap_or_else(|| panic!("a key when asked:\n{}", asked.banner));
    lookup_with(&asked.addr, &key)
        .await
        .expect("the bootstrap key works");
    assert!(asked.terminate().success());

    // A restart with the flag still set finds the tenant and mints nothing.
    let again = start(&url, &["--bootstrap-tenant", tenant.as_str()]);
    assert_eq!(
        key_in(&again.banner),
        None,
        "a restart with --bootstrap-tenant prints no second key:\n{}",
        again.banner
    );
    lookup_with(&again.addr, &key)
        .await
        .expect("the first key still works");
    assert!(again.terminate().success());
}
