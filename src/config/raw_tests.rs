//! Settings validation, and the reference that documents it.

use super::*;

/// `docs/reference.md` is the contract users read: every setting is in
/// its table, and every `ALLOT_*` its table names exists.
#[test]
fn the_reference_lists_exactly_the_settings() {
    let reference = include_str!("../../docs/reference.md");
    let table = reference
        .split("## Settings")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a Settings section");
    let known = serde_json::to_value(RawSettings::default()).unwrap();
    let known: Vec<String> = known
        .as_object()
        .unwrap()
        .keys()
        .map(|k| format!("ALLOT_{}", k.to_uppercase()))
        .collect();
    for var in &known {
        assert!(
            table.contains(&format!("`{var}`")),
            "{var} is not in docs/reference.md"
        );
    }
    for word in table.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ALLOT_") && word.len() > 6 && word != "ALLOT_CONFIG" {
            assert!(
                known.iter().any(|k| k == word),
                "docs/reference.md names {word}, which is no setting"
            );
        }
    }
}

#[test]
fn listen_shorthand_keeps_loopback() {
    assert_eq!(listen_address(":0").unwrap(), "127.0.0.1:0");
    assert_eq!(listen_address("0.0.0.0:80").unwrap(), "0.0.0.0:80");
    assert!(listen_address("8080").is_err());
    assert!(listen_address("host:99999").is_err());
}

#[test]
fn errors_name_the_variable() {
    let raw = RawSettings {
        shutdown_grace: "soon".into(),
        ..RawSettings::default()
    };
    let err = raw.validate().unwrap_err().to_string();
    assert!(err.starts_with("ALLOT_SHUTDOWN_GRACE:"), "{err}");

    let raw = RawSettings {
        database_url: "redis://localhost".into(),
        ..RawSettings::default()
    };
    let err = raw.validate().unwrap_err().to_string();
    assert!(err.starts_with("ALLOT_DATABASE_URL:"), "{err}");
}
