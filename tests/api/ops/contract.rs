//! The contract itself: `buf lint` with the STANDARD rules and the exceptions that
//! `buf.yaml` lists and explains.

use std::process::Command;

use crate::support::tools::buf;

#[test]
fn the_proto_files_pass_buf_lint_with_the_standard_rules() {
    let root = env!("CARGO_MANIFEST_DIR");
    let config = std::fs::read_to_string(format!("{root}/buf.yaml")).expect("read buf.yaml");
    assert!(
        config.contains("- STANDARD"),
        "buf.yaml lints with STANDARD"
    );
    let output = Command::new(buf())
        .arg("lint")
        .current_dir(root)
        .output()
        .expect("run buf lint");
    assert!(
        output.status.success(),
        "buf lint:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
