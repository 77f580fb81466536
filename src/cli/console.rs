//! The interactive `allot ctl`: line editing, history (`~/.allot_history`),
//! tab-completion of commands, options and process ids. Each line is
//! parsed by the same definitions as the one-shot form, so `ping --target
//! role=worker` means the same in both.

use std::sync::{Arc, Mutex};

use clap::Parser;
use rustyline::{
    Context, Editor, Helper,
    completion::{Completer, Pair},
    highlight::Highlighter,
    hint::Hinter,
    history::DefaultHistory,
    validate::Validator,
};

use super::ctl::{self, CtlCommand};
use crate::{clock::now_ms, config::Settings, control, db::Db};

#[derive(Parser)]
#[command(
    name = "allot ctl",
    no_binary_name = true,
    disable_version_flag = true,
    after_help = "Also: quit (or Ctrl-D). Tab completes commands, options and process ids."
)]
struct Line {
    #[command(subcommand)]
    command: CtlCommand,
}

const WORDS: [&str; 9] = [
    "status",
    "start",
    "stop",
    "terminate",
    "ping",
    "calculate",
    "processes",
    "history",
    "help",
];
const OPTIONS: [&str; 3] = ["--target", "--json", "--timeout"];

pub(super) async fn run(db: &Db, settings: &Settings) -> anyhow::Result<()> {
    let ids = Arc::new(Mutex::new(Vec::new()));
    let mut editor: Editor<Completion, DefaultHistory> = Editor::new()?;
    editor.set_helper(Some(Completion { ids: ids.clone() }));
    let history =
        std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".allot_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    println!(
        "allot ctl on {} — type help, or a command such as status or ping --target role=worker",
        db.backend().name()
    );
    if let Err(error) = ctl::print_processes(db, false).await {
        println!("error: {error:#}");
    }
    loop {
        refresh_ids(db, &ids).await;
        // Reading a line blocks; it gets a thread of its own.
        let (back, read) = tokio::task::spawn_blocking(move || {
            let read = editor.readline("allot> ");
            (editor, read)
        })
        .await?;
        editor = back;
        let line = match read {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => continue,
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(line);
        if matches!(line, "quit" | "exit") {
            break;
        }
        let Some(words) = shlex::split(line) else {
            println!("error: unbalanced quotes");
            continue;
        };
        match Line::try_parse_from(words) {
            Ok(parsed) => {
                if let Err(error) = ctl::run(parsed.command, db, settings).await {
                    println!("error: {error:#}");
                }
            }
            // `help` and `--help` arrive here too, as clap's "errors".
            Err(error) => print!("{error}"),
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

async fn refresh_ids(db: &Db, ids: &Mutex<Vec<String>>) {
    let now = now_ms();
    if let Ok(list) = control::list(db).await {
        let mut known: Vec<String> = vec!["all".into(), "role=serve".into(), "role=worker".into()];
        for process in list.iter().filter(|p| p.is_live(now)) {
            known.push(process.id.clone());
            let host = format!("host={}", process.host);
            if !known.contains(&host) {
                known.push(host);
            }
        }
        *ids.lock().unwrap() = known;
    }
}

struct Completion {
    /// Targets to offer after `--target`, refreshed before each prompt.
    ids: Arc<Mutex<Vec<String>>>,
}

impl Completer for Completion {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        let start = before.rfind(' ').map_or(0, |i| i + 1);
        let word = &before[start..];
        let previous = before[..start].split_whitespace().last();
        let choices: Vec<String> = if start == 0 {
            WORDS.iter().map(|w| w.to_string()).collect()
        } else if previous == Some("--target") {
            self.ids.lock().unwrap().clone()
        } else {
            OPTIONS.iter().map(|w| w.to_string()).collect()
        };
        let pairs = choices
            .into_iter()
            .filter(|choice| choice.starts_with(word))
            .map(|choice| Pair {
                display: choice.clone(),
                replacement: choice,
            })
            .collect();
        Ok((start, pairs))
    }
}

impl Hinter for Completion {
    type Hint = String;
}
impl Highlighter for Completion {}
impl Validator for Completion {}
impl Helper for Completion {}
