//! `allot keys import FILE --sku SKU`: a CSV file with a `license_key`
//! column, or one key per line. Streams the file in batches (a million keys
//! never sit in memory), reports blank lines, invalid keys and duplicates by
//! line number (never the key itself) and keeps going.

use std::{
    collections::HashSet,
    fs::File,
    hash::{DefaultHasher, Hash, Hasher},
    io::{BufRead, BufReader, Read},
    path::Path,
};

use anyhow::Context;
use indicatif::ProgressBar;

use super::{LicenseKey, Sku, store};
use crate::db::Db;

const BATCH: usize = 1000;

/// What an import did, line by line (1-based line numbers of the file).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub imported: u64,
    pub blank: Vec<u64>,
    pub invalid: Vec<(u64, String)>,
    pub duplicate_in_file: Vec<u64>,
    pub already_in_pool: Vec<u64>,
    /// Keys that had spaces around them, imported without the spaces.
    pub trimmed: Vec<u64>,
}

/// The file, line by line: a CSV line's `license_key` column, or the whole
/// line. Lines are read one at a time so that line numbers are exact and
/// blank lines are reported in both formats (CSV fields spanning lines are
/// not supported; key files do not have them).
struct Rows {
    reader: BufReader<File>,
    /// The `license_key` column, when the first line is a CSV header.
    column: Option<usize>,
    line: u64,
    bytes: u64,
}

impl Rows {
    fn open(path: &Path) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut rows = Self {
            reader: BufReader::new(file),
            column: None,
            line: 0,
            bytes: 0,
        };
        let Some((_, first)) = rows.next_line()? else {
            return Ok(rows);
        };
        let header = csv_fields(first.trim_start_matches('\u{feff}'));
        match header
            .iter()
            .position(|c| c.trim().eq_ignore_ascii_case("license_key"))
        {
            Some(column) => rows.column = Some(column),
            // Columns but no key column: importing whole rows (or the header)
            // as keys would mail a buyer "serial,product". The columns are
            // not named in the error: without a header they are keys.
            None if header.len() > 1 => anyhow::bail!(
                "{}: the first line has {} comma-separated columns and none is named license_key; \
                 add a license_key header to the key column, or give one key per line",
                path.display(),
                header.len()
            ),
            // No header: the first line is a key; start again from the top.
            None => {
                rows = Self {
                    reader: BufReader::new(File::open(path)?),
                    column: None,
                    line: 0,
                    bytes: 0,
                };
            }
        }
        Ok(rows)
    }

    fn next_line(&mut self) -> anyhow::Result<Option<(u64, String)>> {
        let mut buf = Vec::new();
        let read = self.reader.by_ref().read_until(b'\n', &mut buf)?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        self.bytes += read as u64;
        let line = self.line;
        let text =
            String::from_utf8(buf).with_context(|| format!("line {line} is not UTF-8 text"))?;
        Ok(Some((line, text)))
    }

    /// The next (line number, raw value), or `None` at the end.
    fn next(&mut self) -> anyhow::Result<Option<(u64, String)>> {
        let Some((line, text)) = self.next_line()? else {
            return Ok(None);
        };
        let value = match self.column {
            None => text,
            Some(column) => csv_fields(&text)
                .into_iter()
                .nth(column)
                .unwrap_or_default(),
        };
        Ok(Some((line, value)))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

/// The fields of one CSV line (quotes and escaped quotes handled by `csv`).
fn csv_fields(line: &str) -> Vec<String> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .buffer_capacity(line.len().max(64))
        .from_reader(line.as_bytes())
        .records()
        .next()
        .and_then(Result::ok)
        .map(|record| record.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

/// A key waiting for its batch; `seen_before` says an earlier line of the
/// file may hold the same key (its hash matched).
struct Candidate {
    line: u64,
    key: LicenseKey,
    seen_before: bool,
}

pub async fn import_file(
    db: &Db,
    path: &Path,
    sku: &Sku,
    progress: &ProgressBar,
) -> anyhow::Result<ImportReport> {
    let mut rows = Rows::open(path)?;
    progress.set_length(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0));
    let mut report = ImportReport::default();
    // Hashes, not keys: 16 bytes a key keeps a million-key file small in
    // memory. A hash only decides how a duplicate is reported; whether a key
    // is inserted is always decided by the database.
    let mut seen: HashSet<u64> = HashSet::new();
    let mut batch: Vec<Candidate> = Vec::with_capacity(BATCH);
    let mut in_batch: HashSet<LicenseKey> = HashSet::new();
    while let Some((line, raw)) = rows.next()? {
        let unterminated = raw.trim_end_matches(['\n', '\r']);
        let value = unterminated.trim();
        if value.is_empty() {
            report.blank.push(line);
            continue;
        }
        if value != unterminated {
            report.trimmed.push(line);
        }
        let key = match LicenseKey::parse(value) {
            Ok(key) => key,
            Err(e) => {
                report.invalid.push((line, e.to_string()));
                continue;
            }
        };
        if in_batch.contains(&key) {
            report.duplicate_in_file.push(line);
            continue;
        }
        let seen_before = !seen.insert(hash(&key));
        in_batch.insert(key.clone());
        batch.push(Candidate {
            line,
            key,
            seen_before,
        });
        if batch.len() == BATCH {
            flush(db, sku, &mut batch, &mut report).await?;
            in_batch.clear();
            progress.set_position(rows.bytes_read());
        }
    }
    flush(db, sku, &mut batch, &mut report).await?;
    progress.set_position(rows.bytes_read());
    if report.imported > 0 {
        // Vending reads the oldest keys of a SKU in index order only if
        // the planner knows the SKU has many; until autovacuum gets to it,
        // PostgreSQL's statistics say it has none, and it sorts every
        // available key of the SKU for each batch of orders instead.
        if let Err(error) = store::refresh_statistics(db).await {
            tracing::warn!(%error, "keys imported, but their statistics were not refreshed");
        }
    }
    Ok(report)
}

fn hash(key: &LicenseKey) -> u64 {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

async fn flush(
    db: &Db,
    sku: &Sku,
    batch: &mut Vec<Candidate>,
    report: &mut ImportReport,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    // Twice at most: a concurrent import may insert one of these keys
    // between our check and our insert; the second round sees it.
    for round in 0..2 {
        let keys: Vec<&str> = batch.iter().map(|c| c.key.expose()).collect();
        let existing: HashSet<String> = store::existing(db, &keys).await?.into_iter().collect();
        let fresh: Vec<&str> = keys
            .iter()
            .copied()
            .filter(|k| !existing.contains(*k))
            .collect();
        match store::insert_many(db, sku, &fresh, crate::clock::now_ms()).await {
            Ok(()) => {
                for candidate in batch.iter() {
                    if !existing.contains(candidate.key.expose()) {
                        report.imported += 1;
                    } else if candidate.seen_before {
                        report.duplicate_in_file.push(candidate.line);
                    } else {
                        report.already_in_pool.push(candidate.line);
                    }
                }
                batch.clear();
                return Ok(());
            }
            Err(e) if round == 0 && crate::db::is_unique_violation(&e) => continue,
            Err(e) => return Err(e).context("inserting keys"),
        }
    }
    unreachable!("the second round returns")
}
