//! `encryption = { recipients = [...], identity_file = "..." }` on a
//! repository or a job (the job's wins). Backups are encrypted to every
//! recipient; restores and verification need one matching identity.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where a restore looks for the identity when `--identity` is not given.
pub const IDENTITY_ENV: &str = "DRCTL_AGE_IDENTITY_FILE";

/// `encryption = { recipients = [...] }`: age public keys every artifact
/// is encrypted to. Only public keys live in the config: a host that backs
/// up cannot read its own backups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// age X25519 recipients (`age1...`); keep at least one whose identity
    /// lives off this host, or a lost host loses its backups with it.
    pub recipients: Vec<String>,
    /// The identity (`AGE-SECRET-KEY-1...`, as age-keygen writes it) for
    /// restores and deep verification on this host. Optional: a backup-only
    /// host needs no secret key at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
}

impl Encryption {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.recipients.is_empty() {
            return Err((
                "encryption.recipients",
                "expected at least one age recipient (age1...)".into(),
            ));
        }
        crate::base::stream::crypt::parse_recipients(&self.recipients)
            .map(|_| ())
            .map_err(|m| ("encryption.recipients", m))
    }
}
