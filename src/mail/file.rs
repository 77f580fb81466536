//! The `file` transport: one `.eml` file per message in `ALLOT_MAIL_DIR`,
//! named after the Message-ID, so a retried job rewrites the same file
//! instead of adding a second copy.

use std::path::PathBuf;

use lettre::Message;

use super::SendError;

pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Writes to a temporary name, then renames: a reader never sees half a
    /// message, and a crash leaves at most a stray `.tmp`. The three steps
    /// are one task of the blocking pool, not three: each hand-over wakes
    /// a thread, which cost more than the writing (a third of the CPU an
    /// email took under `allot bench orders`).
    pub async fn send(&self, message: &Message, message_id: &str) -> Result<(), SendError> {
        let name: String = message_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-@".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let dir = self.dir.clone();
        let path = dir.join(format!("{name}.eml"));
        let tmp = dir.join(format!(".{name}.eml.tmp"));
        let formatted = message.formatted();
        let shown = path.display().to_string();
        let write = move || -> std::io::Result<()> {
            // The directory is made when it is missing (first message, or
            // removed meanwhile), not checked on every message.
            if let Err(error) = std::fs::write(&tmp, &formatted) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    return Err(error);
                }
                std::fs::create_dir_all(&dir)?;
                std::fs::write(&tmp, &formatted)?;
            }
            std::fs::rename(&tmp, &path)
        };
        tokio::task::spawn_blocking(write)
            .await
            .unwrap_or_else(|joined| Err(std::io::Error::other(joined)))
            .map_err(|e| SendError::transient(format!("cannot write {shown}: {e}")))
    }
}
