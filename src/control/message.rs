//! What may travel on the control channel: a closed, typed set of commands
//! parsed from size-capped JSON (never evaluated, never run as given), the
//! targets they address, and the states a process moves between.
//!
//! A message is parsed twice: by the sender, which refuses a bad one before
//! anything is sent, and by every target, which trusts nothing it reads
//! from the database and answers a bad one with an error reply.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A command larger than this is refused unread.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024;
/// `calculate`'s message, in characters.
pub const MAX_MSG_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase", deny_unknown_fields)]
pub enum Command {
    /// The process's registry row, as it is now. Answered in every state.
    Status,
    /// unready → ready: lease jobs again, accept data commands.
    Start,
    /// ready → unready: lease no new jobs, let what runs finish; data
    /// commands are refused until `start`.
    Stop,
    /// Graceful exit: stop leasing, finish or release in-flight jobs within
    /// `ALLOT_SHUTDOWN_GRACE`, exit 0.
    Terminate,
    /// Data command: the process's Unix time, in seconds.
    Ping,
    /// Data command: compute for `x` seconds beside the process's other
    /// work, then log `msg` and reply.
    Calculate { x: f64, msg: String },
}

impl Command {
    pub const NAMES: [&'static str; 6] =
        ["status", "start", "stop", "terminate", "ping", "calculate"];

    /// Parses and checks a message as the control channel carries it.
    /// `calculate_max` bounds `calculate`'s `x`.
    pub fn parse(text: &str, calculate_max: Duration) -> Result<Self, String> {
        if text.len() > MAX_MESSAGE_BYTES {
            return Err(format!(
                "the message is {} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
                text.len()
            ));
        }
        let expected = || {
            format!(
                "expected {{\"command\": one of {}}}",
                Self::NAMES.join(", ")
            )
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON ({e}); {}", expected()))?;
        let serde_json::Value::Object(fields) = value else {
            return Err(format!("not a JSON object; {}", expected()));
        };
        let Some(name) = fields
            .get("command")
            .and_then(|c| c.as_str())
            .map(String::from)
        else {
            return Err(format!("no \"command\" field; {}", expected()));
        };
        // serde does not refuse extra fields beside a unit variant's tag;
        // a closed set means exactly these fields, so check them here.
        let allowed: &[&str] = match name.as_str() {
            "calculate" => &["command", "x", "msg"],
            known if Self::NAMES.contains(&known) => &["command"],
            unknown => {
                return Err(format!(
                    "unknown command {:?}; {}",
                    printable(&unknown.chars().take(40).collect::<String>()),
                    expected()
                ));
            }
        };
        if let Some(extra) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(format!(
                "{name} takes no field {:?}",
                printable(&extra.chars().take(40).collect::<String>())
            ));
        }
        let command: Command = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| format!("{name}: {e}"))?;
        command.check(calculate_max)?;
        Ok(command)
    }

    /// The argument bounds.
    pub fn check(&self, calculate_max: Duration) -> Result<(), String> {
        if let Command::Calculate { x, msg } = self {
            let max = calculate_max.as_secs_f64();
            if !x.is_finite() || *x < 0.0 || *x > max {
                return Err(format!(
                    "calculate: x must be a number of seconds from 0 to {max} (ALLOT_CALCULATE_MAX)"
                ));
            }
            let chars = msg.chars().count();
            if chars > MAX_MSG_CHARS {
                return Err(format!(
                    "calculate: msg is {chars} characters; at most {MAX_MSG_CHARS} are accepted"
                ));
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a command serialises")
    }

    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Start => "start",
            Command::Stop => "stop",
            Command::Terminate => "terminate",
            Command::Ping => "ping",
            Command::Calculate { .. } => "calculate",
        }
    }

    /// The brief's data commands, accepted only in `ready`.
    pub fn is_data(&self) -> bool {
        matches!(self, Command::Ping | Command::Calculate { .. })
    }
}

crate::stored_state! {
    /// A process's state. `gone` is not among them: it is what an observer
    /// concludes from a missing heartbeat, see [`super::Process::shown_state`].
    pub enum State: "process state" {
        Ready = "ready",
        Unready = "unready",
        /// Terminating: finishing in-flight work, then exit.
        Stopping = "stopping",
        /// Exited cleanly.
        Stopped = "stopped",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Serve,
    Worker,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Worker => "worker",
        }
    }
}

/// Who a command is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    All,
    Role(Role),
    Host(String),
    /// Process ids, as `allot ctl processes` lists them.
    Ids(Vec<String>),
}

impl Target {
    /// `all`, `role=serve`, `role=worker`, `host=NAME`, or process ids
    /// separated by commas. (`=` never occurs in a host name or an id.)
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.len() > 1024 {
            return Err("the target is longer than 1024 bytes".into());
        }
        if text.is_empty() || text == "all" {
            return Ok(Target::All);
        }
        if let Some(role) = text.strip_prefix("role=") {
            return match role {
                "serve" => Ok(Target::Role(Role::Serve)),
                "worker" => Ok(Target::Role(Role::Worker)),
                other => Err(format!(
                    "role {:?} is not serve or worker",
                    printable(other)
                )),
            };
        }
        if let Some(host) = text.strip_prefix("host=") {
            return Ok(Target::Host(host.to_string()));
        }
        if text.contains('=') {
            return Err(format!(
                "target {:?} is not all, role=…, host=… or process ids",
                printable(text)
            ));
        }
        Ok(Target::Ids(
            text.split(',')
                .map(str::trim)
                .filter(|id| !id.is_empty())
                .map(String::from)
                .collect(),
        ))
    }
}

/// Text from a message made safe to print on a terminal or in a log line:
/// control and invisible characters are shown escaped, never interpreted.
pub fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}') {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(60);

    #[test]
    fn the_closed_set_parses_and_nothing_else_does() {
        assert_eq!(
            Command::parse(r#"{"command":"ping"}"#, MAX),
            Ok(Command::Ping)
        );
        assert_eq!(
            Command::parse(r#"{"command":"calculate","x":1.5,"msg":"hi"}"#, MAX),
            Ok(Command::Calculate {
                x: 1.5,
                msg: "hi".into()
            })
        );
        for bad in [
            r#"{"command":"exec","cmd":"rm -rf /"}"#,
            r#"{"command":"ping","extra":1}"#,
            r#"{"command":"calculate","x":"5","msg":"hi"}"#,
            r#"{"command":"calculate","x":5}"#,
            r#"["ping"]"#,
            "ping",
            "",
        ] {
            assert!(Command::parse(bad, MAX).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn calculate_is_bounded() {
        let parse = |x: &str| {
            Command::parse(
                &format!(r#"{{"command":"calculate","x":{x},"msg":""}}"#),
                MAX,
            )
        };
        assert!(parse("0").is_ok());
        assert!(parse("60").is_ok());
        assert!(parse("60.001").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("1e400").is_err(), "infinity");
        let long = "x".repeat(MAX_MSG_CHARS + 1);
        let message = format!(r#"{{"command":"calculate","x":1,"msg":"{long}"}}"#);
        assert!(Command::parse(&message, MAX).is_err());
        let huge = format!(
            r#"{{"command":"ping","pad":"{}"}}"#,
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert!(Command::parse(&huge, MAX).unwrap_err().contains("bytes"));
    }

    #[test]
    fn targets() {
        assert_eq!(Target::parse("all"), Ok(Target::All));
        assert_eq!(Target::parse("role=worker"), Ok(Target::Role(Role::Worker)));
        assert_eq!(
            Target::parse("host=web-1"),
            Ok(Target::Host("web-1".into()))
        );
        assert_eq!(
            Target::parse("a:1:ff, b:2:ee"),
            Ok(Target::Ids(vec!["a:1:ff".into(), "b:2:ee".into()]))
        );
        assert!(Target::parse("role=admin").is_err());
        assert!(Target::parse("pid=3").is_err());
    }

    #[test]
    fn terminal_escapes_are_shown_not_run() {
        assert_eq!(printable("ok\u{1b}[31mred\n"), "ok\\u{1b}[31mred\\u{a}");
        assert_eq!(printable("déjà vu"), "déjà vu");
    }
}
