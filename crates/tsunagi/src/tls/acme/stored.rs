//! What ACME keeps in `data-dir/acme/` ([`ACME_DIR`]; the directory only its owner may
//! enter, every file only its owner may read, each written whole by rename):
//!
//! - `account-<hash>.json`: the account at one CA directory (its key and URL, the
//!   contact it was made with), one file per directory URL, so that going from a staging
//!   CA to the production one and back keeps both accounts.
//! - [`CERTIFICATE_FILE`]: the certificate chain (leaf first) and its key, as PEM, after
//!   a line naming the CA directory it came from.

use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::super::kept::{pem, read_bounded, write_private};
use super::super::TlsMaterial;

/// The subdirectory of `data-dir`.
pub const ACME_DIR: &str = "acme";
/// The certificate and its key.
pub const CERTIFICATE_FILE: &str = "certificate.pem";
/// The first line of [`CERTIFICATE_FILE`], before the directory URL.
const HEADER: &str = "# tsunagi ACME certificate from ";

/// A certificate kept from an earlier run.
#[derive(Debug)]
pub struct KeptCertificate {
    pub material: TlsMaterial,
    /// The CA directory it came from.
    pub directory: String,
    pub path: PathBuf,
}

/// The certificate kept in `dir`: `Ok(None)` when there is none, `Err(why)` when the
/// file cannot be used.
pub fn load_certificate(dir: &Path) -> Result<Option<KeptCertificate>, String> {
    let path = dir.join(CERTIFICATE_FILE);
    let text = match read_bounded(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let directory = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(HEADER))
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| format!("{} is not a certificate file of tsunagi's", path.display()))?;
    let material = TlsMaterial::from_pem(text.as_bytes(), text.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(KeptCertificate {
        material,
        directory,
        path,
    }))
}

/// Keeps `m`, from the CA at `directory`, in `dir`; returns the file.
pub fn save_certificate(dir: &Path, directory: &str, m: &TlsMaterial) -> std::io::Result<PathBuf> {
    let (chain, key) = m.to_pem();
    let text = format!("{HEADER}{directory}\n{chain}{key}");
    let path = dir.join(CERTIFICATE_FILE);
    write_private(dir, &path, text.as_bytes())?;
    Ok(path)
}

/// The account file of one CA directory.
#[derive(Serialize, Deserialize)]
struct AccountFile {
    directory: String,
    /// `mailto:` URLs the account was made (or last updated) with.
    contact: Vec<String>,
    credentials: AccountCredentials,
}

/// The account kept for a CA directory.
pub struct KeptAccount {
    pub contact: Vec<String>,
    pub credentials: AccountCredentials,
}

impl std::fmt::Debug for KeptAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptAccount")
            .field("contact", &self.contact)
            .finish_non_exhaustive()
    }
}

/// `account-<first 8 bytes of SHA-256 of the directory URL, hex>.json`.
pub fn account_path(dir: &Path, directory: &str) -> PathBuf {
    let hash = Sha256::digest(directory.as_bytes());
    dir.join(format!("account-{}.json", hex::encode(&hash[..8])))
}

/// The account kept for `directory`: `Ok(None)` when there is none, `Err(why)` when
/// the file cannot be used.
pub fn load_account(dir: &Path, directory: &str) -> Result<Option<KeptAccount>, String> {
    let path = account_path(dir, directory);
    let text = match read_bounded(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: AccountFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not an ACME account file: {e}", path.display()))?;
    if file.directory != directory {
        return Err(format!(
            "{} belongs to {}, not {directory}",
            path.display(),
            file.directory
        ));
    }
    Ok(Some(KeptAccount {
        contact: file.contact,
        credentials: file.credentials,
    }))
}

/// Keeps the account of `directory` in `dir`.
pub fn save_account(
    dir: &Path,
    directory: &str,
    contact: &[String],
    credentials: AccountCredentials,
) -> std::io::Result<PathBuf> {
    let file = AccountFile {
        directory: directory.to_owned(),
        contact: contact.to_vec(),
        credentials,
    };
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    let path = account_path(dir, directory);
    write_private(dir, &path, text.as_bytes())?;
    Ok(path)
}

/// Records a new contact in the account file of `directory`.
pub fn set_contact(dir: &Path, directory: &str, contact: &[String]) -> std::io::Result<()> {
    let path = account_path(dir, directory);
    let text = read_bounded(&path)?;
    let mut file: AccountFile = serde_json::from_str(&text).map_err(std::io::Error::other)?;
    file.contact = contact.to_vec();
    let text = serde_json::to_string_pretty(&file).map_err(std::io::Error::other)?;
    write_private(dir, &path, text.as_bytes())
}

/// Forgets the account of `directory` (the CA no longer knows it).
pub fn forget_account(dir: &Path, directory: &str) {
    let _ = std::fs::remove_file(account_path(dir, directory));
}

/// A key as PEM (`PRIVATE KEY`, PKCS#8).
pub fn key_pem(pkcs8_der: &[u8]) -> String {
    pem("PRIVATE KEY", pkcs8_der)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scratch(test: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tsunagi-acme-{test}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d.join(ACME_DIR)
    }

    #[test]
    fn a_certificate_is_kept_with_its_directory_and_only_its_owner_reads_it() {
        let dir = scratch("cert");
        assert!(load_certificate(&dir).unwrap().is_none());
        let m = TlsMaterial::self_signed(vec!["turn.example.com".into()]).unwrap();
        let path = save_certificate(&dir, "https://ca.example/dir", &m).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let kept = load_certificate(&dir).unwrap().unwrap();
        assert_eq!(kept.directory, "https://ca.example/dir");
        assert_eq!(kept.material.fingerprint(), m.fingerprint());
        assert_eq!(kept.material.names(), ["turn.example.com"]);
        assert_eq!(kept.path, path);

        // Damaged or foreign files are refused with the reason, never a panic.
        for junk in [
            &b""[..],
            b"-----BEGIN CERTIFICATE-----\n",
            b"# tsunagi ACME certificate from \n",
            b"# tsunagi ACME certificate from https://ca.example/dir\nAAAA\n",
            &[0xff, 0xfe][..],
        ] {
            std::fs::write(&path, junk).unwrap();
            let why = load_certificate(&dir).unwrap_err();
            assert!(why.contains(CERTIFICATE_FILE), "{why}");
        }
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn accounts_are_kept_per_directory() {
        let dir = scratch("account");
        let a = "https://acme-staging-v02.api.letsencrypt.org/directory";
        let b = "https://acme-v02.api.letsencrypt.org/directory";
        assert_ne!(account_path(&dir, a), account_path(&dir, b));
        assert!(load_account(&dir, a).unwrap().is_none());
        // Credentials as instant-acme writes them (its format is opaque).
        let credentials: AccountCredentials = serde_json::from_str(
            r#"{"id":"https://ca.example/acct/1","key_pkcs8":"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgJVWC_QzOTCS5vtsJp2IG-UDc8cdDfeoKtxSZxaznM-mhRANCAAQenCPoGgPFTdPJ7VLLKt56RxPlYT1wNXnHc54PEyBg3LxKaH0-sJkX0mL8LyPEdsfL_Oz4TxHkWLJGrXVtNhfH","directory":"https://acme-staging-v02.api.letsencrypt.org/directory"}"#,
        )
        .unwrap();
        let contact = vec!["mailto:admin@example.com".to_owned()];
        save_account(&dir, a, &contact, credentials).unwrap();
        let kept = load_account(&dir, a).unwrap().unwrap();
        assert_eq!(kept.contact, contact);
        set_contact(&dir, a, &[]).unwrap();
        assert!(load_account(&dir, a).unwrap().unwrap().contact.is_empty());
        assert!(load_account(&dir, b).unwrap().is_none());
        // A file of another directory under this name is refused.
        std::fs::copy(account_path(&dir, a), account_path(&dir, b)).unwrap();
        let why = load_account(&dir, b).unwrap_err();
        assert!(why.contains("belongs to"), "{why}");
        std::fs::write(account_path(&dir, b), "{").unwrap();
        assert!(load_account(&dir, b)
            .unwrap_err()
            .contains("not an ACME account file"));
        forget_account(&dir, a);
        assert!(load_account(&dir, a).unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }
}
