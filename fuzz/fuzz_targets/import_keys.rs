//! Any bytes as a key file, imported into a real SQLite pool: the import
//! never panics, and its report names each line of the file at most once.

#![no_main]

use std::{collections::HashSet, sync::OnceLock};

use allot::{config::Settings, db::Db, keys};
use libfuzzer_sys::fuzz_target;

struct Pool {
    runtime: tokio::runtime::Runtime,
    db: Db,
    dir: tempfile::TempDir,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("fuzz.db").display());
        let db = runtime
            .block_on(Db::open(&Settings::for_database(url).database))
            .unwrap();
        Pool { runtime, db, dir }
    })
}

fuzz_target!(|file: &[u8]| {
    let pool = pool();
    let path = pool.dir.path().join("keys.txt");
    std::fs::write(&path, file).unwrap();
    let sku = keys::Sku::parse("fuzz").unwrap();
    let imported = pool.runtime.block_on(keys::import::import_file(
        &pool.db,
        &path,
        &sku,
        &indicatif::ProgressBar::hidden(),
    ));
    let Ok(report) = imported else {
        return; // refused whole: not UTF-8, or columns without license_key
    };
    let lines = file.split(|b| *b == b'\n').count() as u64;
    let mut seen = HashSet::new();
    let reported = report
        .blank
        .iter()
        .chain(&report.duplicate_in_file)
        .chain(&report.already_in_pool)
        .chain(report.invalid.iter().map(|(line, _)| line));
    for line in reported {
        assert!(*line >= 1 && *line <= lines, "line {line} of {lines}");
        assert!(seen.insert(*line), "line {line} reported twice");
    }
    assert!(report.imported + seen.len() as u64 <= lines);
});
