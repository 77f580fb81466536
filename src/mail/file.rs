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
    /// message, and a crash leaves at most a stray `.tmp`.
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
        let path = self.dir.join(format!("{name}.eml"));
        let tmp = self.dir.join(format!(".{name}.eml.tmp"));
        let write = async {
            tokio::fs::create_dir_all(&self.dir).await?;
            tokio::fs::write(&tmp, message.formatted()).await?;
            tokio::fs::rename(&tmp, &path).await
        };
        write
            .await
            .map_err(|e| SendError::transient(format!("cannot write {}: {e}", path.display())))
    }
}
