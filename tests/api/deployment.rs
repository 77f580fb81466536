//! The container files stay true to the binary: every setting they pass is
//! one allot knows, and every command they run exists. (The schema check of
//! compose.yaml is `scripts/check-compose.sh`, run by CI.)

use crate::helpers::allot_command;

fn settings_named_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("ALLOT_") && w.len() > 6)
        .map(String::from)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn container_files_pass_only_known_settings() {
    let reference = include_str!("../../docs/reference.md");
    let settings = reference
        .split("## Settings")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .unwrap();
    for (file, text) in [
        ("compose.yaml", include_str!("../../compose.yaml")),
        ("Dockerfile", include_str!("../../Dockerfile")),
    ] {
        let names = settings_named_in(text);
        assert!(!names.is_empty(), "{file} sets allot up");
        for name in names {
            assert!(
                settings.contains(&format!("`{name}`")),
                "{file} passes {name}, which is no setting"
            );
        }
    }
}

#[test]
fn container_commands_exist() {
    let dir = tempfile::tempdir().unwrap();
    for command in ["serve", "worker", "migrate", "ctl"] {
        let help = allot_command(dir.path())
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(help.status.success(), "allot {command} --help");
    }
    let compose = include_str!("../../compose.yaml");
    for command in [
        "[\"serve\"]",
        "[\"worker\"]",
        "[\"migrate\"]",
        "[\"allot\", \"ctl\"]",
    ] {
        assert!(compose.contains(command), "compose.yaml runs {command}");
    }
}
