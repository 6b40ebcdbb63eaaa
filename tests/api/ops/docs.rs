//! The README's configuration section is checked against clap's definitions, so a
//! new flag, a renamed environment variable or a changed default cannot go
//! undocumented.

use clap::CommandFactory;
use kraiter_contacts::config::Cli;

const README: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"));

/// `(flag, environment, default)` rows of the README's configuration table.
fn readme_rows() -> Vec<(String, String, String)> {
    let section = README
        .split("\n## Configuration")
        .nth(1)
        .expect("README has a Configuration section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut rows = Vec::new();
    for line in section.lines() {
        let cells: Vec<&str> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() < 4 || !cells[0].starts_with("`--") {
            continue;
        }
        let plain = |cell: &str| cell.trim_matches('`').to_owned();
        rows.push((plain(cells[0]), plain(cells[1]), plain(cells[2])));
    }
    rows
}

#[test]
fn the_readme_configuration_table_matches_every_serve_flag() {
    let command = Cli::command();
    let rows = readme_rows();
    let mut documented: Vec<&str> = rows.iter().map(|(flag, _, _)| flag.as_str()).collect();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let flag = format!("--{long}");
        let row = rows
            .iter()
            .find(|(f, _, _)| *f == flag)
            .unwrap_or_else(|| panic!("`{flag}` is missing from the README configuration table"));
        let env = arg
            .get_env()
            .map(|env| env.to_string_lossy().into_owned())
            .unwrap_or_else(|| panic!("`{flag}` has no environment variable"));
        assert_eq!(row.1, env, "environment variable of `{flag}`");
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|value| value.to_string_lossy().into_owned())
            .collect();
        let default = if default.is_empty() {
            "none".to_owned()
        } else {
            default.join(",")
        };
        assert_eq!(row.2, default, "default of `{flag}`");
        documented.retain(|f| *f != flag);
    }
    assert!(
        documented.is_empty(),
        "the README documents flags clap does not have: {documented:?}"
    );
}

#[test]
fn the_readme_names_every_subcommand() {
    let line = README
        .lines()
        .find(|line| line.starts_with("Subcommands:"))
        .expect("the README lists the subcommands");
    for sub in Cli::command().get_subcommands() {
        let name = sub.get_name();
        if name == "help" {
            continue;
        }
        assert!(line.contains(&format!("`{name}")), "`{name}` in {line}");
    }
}
