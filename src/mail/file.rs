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

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message::builder()
            .from("allot@localhost".parse().unwrap())
            .to("buyer@shop.test".parse().unwrap())
            .subject("Your key")
            .body("KEY-1".to_string())
            .unwrap()
    }

    /// The directory is made on the first message, and a message sent
    /// again (a retried job) replaces its file rather than adding one.
    #[tokio::test]
    async fn a_missing_directory_is_made_and_a_resend_replaces_the_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("var/mail");
        let mailer = FileMailer::new(dir.clone());
        mailer.send(&message(), "<m1@allot>").await.unwrap();
        mailer.send(&message(), "<m1@allot>").await.unwrap();
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["_m1@allot_.eml"]);
        let text = std::fs::read_to_string(dir.join("_m1@allot_.eml")).unwrap();
        assert!(text.contains("KEY-1"), "{text}");
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_made_is_a_transient_error() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let mailer = FileMailer::new(file.join("mail"));
        let error = mailer.send(&message(), "<m2@allot>").await.unwrap_err();
        assert!(error.to_string().contains("cannot write"), "{error}");
    }
}
