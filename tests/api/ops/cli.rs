//! The operator's command line against a running server: `contacts export` streams
//! the tenant's contacts as JSON Lines (what `contacts import` reads back) or CSV.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::conformance;
use crate::support::{Backend, TestApp, create, spawn_app};

const BIN: &str = env!("CARGO_BIN_EXE_kraiter-contacts");

/// Runs `kraiter-contacts contacts ARGS` against `app`, its key in the environment.
async fn contacts_cli(app: &TestApp, args: &[&str]) -> Output {
    contacts_cli_as(app, &app.key, args).await
}

/// `contacts_cli` under another key.
async fn contacts_cli_as(app: &TestApp, key: &str, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("contacts")
        .args(args)
        .args(["--addr", &format!("http://{}", app.addr)])
        .env("KRAITER_API_KEY", key);
    run(command).await
}

fn path(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// How long one CLI run may take (the 100k-row import takes seconds).
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// Runs the CLI to its end, its output captured; one that has not ended within
/// `CLI_LIMIT` is killed and fails the test by name, rather than stalling the suite
/// (an import once hung in CI: the session-11 note).
async fn run(mut command: Command) -> Output {
    // Its program and arguments, not its environment (the key).
    let what = format!(
        "{:?} {:?}",
        command.get_program(),
        command.get_args().collect::<Vec<_>>()
    );
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = command.spawn().expect("start the cli");
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(CLI_LIMIT, waiting).await {
        Ok(output) => output.expect("the cli's wait").expect("the cli runs"),
        Err(_) => {
            // Killed, the blocking wait ends, so the runtime can shut down.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("{what}: no answer within {CLI_LIMIT:?}");
        }
    }
}

async fn export_streams_every_contact_as_json_lines_and_csv(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    let mut ids = Vec::new();
    for n in 0..1_500 {
        let email = format!("export{n:04}@example.com");
        let props = json!({"n": n, "plan": if n % 2 == 0 { "pro" } else { "free" }});
        ids.push(create(&mut client, &email, props).await.id);
    }
    let output = contacts_cli(&app, &["export"]).await;
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<Value> = String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let exported: Vec<&str> = lines
        .iter()
        .map(|l| l["id"].as_str().expect("id"))
        .collect();
    assert_eq!(
        exported, ids,
        "every contact once, in id order, across pages"
    );
    assert_eq!(lines[7]["email"], "export0007@example.com");
    assert_eq!(lines[7]["properties"], json!({"n": 7, "plan": "free"}));
    assert!(lines[7]["etag"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("exported 1500 contacts"),
        "a summary on stderr"
    );

    let output = contacts_cli(
        &app,
        &["export", "--format", "csv", "--search", "export000"],
    )
    .await;
    assert!(output.status.success(), "{output:?}");
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let header: Vec<String> = reader
        .headers()
        .expect("a header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "id",
            "email",
            "suppressed",
            "unsubscribed",
            "created_at",
            "updated_at",
            "properties"
        ]
    );
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("a record")).collect();
    assert_eq!(
        records.len(),
        10,
        "the search applies: export0000-export0009"
    );
    let properties: Value = serde_json::from_str(&records[3][6]).expect("properties as JSON");
    assert_eq!(properties, json!({"n": 3, "plan": "free"}));

    let output = contacts_cli_as(&app, "kr_wrong", &["export"]).await;
    assert!(!output.status.success(), "a wrong key fails the export");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("UNAUTHORISED"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every contact's email and properties, read back through the CLI's own export.
async fn exported(app: &TestApp, key: &str) -> Vec<(String, Value)> {
    let output = contacts_cli_as(app, key, &["export"]).await;
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).expect("a JSON line");
            (
                line["email"].as_str().expect("email").to_owned(),
                line["properties"].clone(),
            )
        })
        .collect()
}

async fn an_exported_file_imports_into_another_tenant_unchanged(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut client = app.client();
    for n in 0..120 {
        let props = json!({"n": n, "tags": ["a", n], "nested": {"zip": "02134"}});
        create(&mut client, &format!("trip{n:03}@example.com"), props).await;
    }
    let output = contacts_cli(&app, &["export"]).await;
    assert!(output.status.success(), "{output:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("contacts.jsonl");
    std::fs::write(&file, &output.stdout).expect("write the export");

    let other = app.other_tenant_key().await;
    let import = ["import", path(&file), "--batch", "50"];
    let output = contacts_cli_as(&app, &other, &import).await;
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("created 120, updated 0, unchanged 0, failed 0"),
        "{stderr}"
    );
    assert_eq!(exported(&app, &other).await, exported(&app, &app.key).await);
}

conformance!(
    export_streams_every_contact_as_json_lines_and_csv,
    an_exported_file_imports_into_another_tenant_unchanged,
);

/// 100,000 rows of CSV, bad ones among them: every good row lands, typed as the
/// README says; every bad one is in the failed-rows file with its line and reason;
/// the exit status says rows failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100k_row_csv_imports_with_its_bad_rows_reported() {
    let app = spawn_app(Backend::Postgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("people.csv");
    let mut csv = String::from("email,plan,seats,code,vip\n");
    let mut bad = Vec::new();
    for n in 0..100_000u32 {
        let line = n + 2;
        match n % 20_000 {
            1 => {
                csv.push_str(&format!("not-an-email-{n},pro,1,007,true\n"));
                bad.push((line, "VALIDATION_ERROR"));
            }
            2 => {
                csv.push_str(&format!("short{n}@example.com,pro\n"));
                bad.push((line, "UNREADABLE"));
            }
            3 => {
                csv.push_str(&format!("nul{n}@example.com,a\u{0}b,1,007,false\n"));
                bad.push((line, "VALIDATION_ERROR"));
            }
            _ => csv.push_str(&format!("row{n}@example.com,pro,{},007,\n", n % 7)),
        }
    }
    std::fs::write(&file, csv).expect("write the file");
    let failed = dir.path().join("failed.jsonl");
    let import = ["import", path(&file), "--failed", path(&failed)];
    let output = contacts_cli(&app, &import).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "rows failed: {stderr}");
    let good = 100_000 - bad.len();
    assert!(
        stderr.contains(&format!(
            "created {good}, updated 0, unchanged 0, failed {}",
            bad.len()
        )),
        "{stderr}"
    );
    let reported: Vec<Value> = std::fs::read_to_string(&failed)
        .expect("the failed rows")
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let mut seen: Vec<(u32, String)> = reported
        .iter()
        .map(|r| {
            let line = r["line"].as_u64().expect("line") as u32;
            (line, r["reason"].as_str().expect("reason").to_owned())
        })
        .collect();
    seen.sort();
    let want: Vec<(u32, String)> = bad.iter().map(|(l, r)| (*l, (*r).to_owned())).collect();
    assert_eq!(seen, want, "every bad row, with its reason");

    let contacts = exported(&app, &app.key).await;
    assert_eq!(contacts.len(), good, "every good row, once");
    let (_, properties) = contacts
        .iter()
        .find(|(email, _)| email == "row4@example.com")
        .expect("row 4 imported");
    assert_eq!(
        properties,
        &json!({"plan": "pro", "seats": 4, "code": "007"})
    );
}
