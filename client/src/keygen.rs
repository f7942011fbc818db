//! `shoal keygen`: create an ed25519 secret key file (mode 0600).

use crate::cli::KeygenArgs;
use crate::{Exit, with_exit};
use anyhow::Context as _;
use shoal_types::SecretKey;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

pub(crate) fn run(args: &KeygenArgs) -> anyhow::Result<()> {
    let key = SecretKey::generate().context("reading the system's random source")?;
    write_key_file(&args.out, &key)?;
    if args.json {
        let out = serde_json::json!({ "public_key": key.public(), "path": args.out });
        println!("{out}");
    } else {
        println!("wrote secret key to {}", args.out.display());
        println!("public key: {}", key.public());
    }
    Ok(())
}

/// Writes `key` to a new file readable only by its owner; never overwrites.
pub fn write_key_file(path: &Path, key: &SecretKey) -> anyhow::Result<()> {
    write_secret_file(path, &key.to_file_text(), "a key")
}

/// Writes `text` to a new file readable only by its owner, synced; never
/// overwrites (`what` names the secret in the error), and removes a file
/// it could not write whole.
pub fn write_secret_file(path: &Path, text: &str, what: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                let msg = format!(
                    "{} already exists; refusing to overwrite {what}",
                    path.display()
                );
                with_exit(anyhow::anyhow!(msg), Exit::OutputExists)
            } else {
                anyhow::Error::new(e).context(format!("creating {}", path.display()))
            }
        })?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Reads a secret key file written by [`write_key_file`].
pub fn read_key_file(path: &Path) -> anyhow::Result<SecretKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))
        .map_err(|e| with_exit(e, Exit::BadInput))?;
    SecretKey::from_file_text(&text)
        .with_context(|| format!("key file {}", path.display()))
        .map_err(|e| with_exit(e, Exit::BadInput))
}
