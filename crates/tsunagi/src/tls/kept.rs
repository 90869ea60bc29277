//! The self-signed certificate kept in `data-dir` ([`SELF_SIGNED_FILE`]): made at the
//! first start, used again while it covers every name the server answers to, so that
//! a browser that accepted it once keeps accepting it across restarts.

use std::path::Path;

use super::{TlsError, TlsMaterial, MAX_PEM_BYTES};

/// The kept self-signed certificate and its key, in `data-dir`.
pub const SELF_SIGNED_FILE: &str = "self-signed.pem";

/// The first line of [`SELF_SIGNED_FILE`], before the names it covers.
pub(crate) const NAMES_LINE: &str = "# tsunagi self-signed certificate for: ";

/// What became of a self-signed certificate ([`TlsMaterial::self_signed_kept`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// The one in this file covers every name: used again.
    Reused(std::path::PathBuf),
    /// None was kept: a new one, written to this file.
    Written(std::path::PathBuf),
    /// The one in this file could not serve (why): a new one replaced it.
    Replaced(std::path::PathBuf, String),
    /// A new one for this run only (why).
    NotKept(String),
}

/// `der` as a PEM block (RFC 7468: base64 in lines of 64).
pub(crate) fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Reads `path` whole, refusing files over [`MAX_PEM_BYTES`].
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut text = String::new();
    f.take(MAX_PEM_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_PEM_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "larger than a certificate file can be",
        ));
    }
    Ok(text)
}

/// Writes `bytes` to `path` in `dir` (made if missing, only its owner may enter)
/// through a file only its owner may read, renamed into place: a reader sees the old
/// file or the new one whole, never a mix of two writers'.
pub(crate) fn write_private(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)?;
    let name = path.file_name().map_or_else(
        || SELF_SIGNED_FILE.into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let written = options
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

impl TlsMaterial {
    /// The self-signed certificate kept in `dir` ([`SELF_SIGNED_FILE`]) when it covers
    /// every one of `names`, so that a browser that accepted it once keeps accepting it
    /// across restarts; else a new one for `names`, written there (the file only its
    /// owner may read: it holds the key). Keeping is best effort: when `dir` is `None`
    /// or cannot be written, the new certificate serves this run and [`Kept::NotKept`]
    /// says why.
    pub fn self_signed_kept(
        dir: Option<&Path>,
        names: Vec<String>,
    ) -> Result<(Self, Kept), TlsError> {
        let Some(dir) = dir else {
            let m = Self::self_signed(names)?;
            return Ok((
                m,
                Kept::NotKept("no data-dir (no home directory); set data-dir".into()),
            ));
        };
        let path = dir.join(SELF_SIGNED_FILE);
        let mut stale = None;
        match read_bounded(&path) {
            Ok(text) => match Self::from_kept(&text) {
                Ok(m) if names.iter().all(|n| m.names.contains(n)) => {
                    return Ok((m, Kept::Reused(path)));
                }
                Ok(m) => {
                    let missing: Vec<&str> = names
                        .iter()
                        .filter(|n| !m.names.contains(n))
                        .map(String::as_str)
                        .collect();
                    stale = Some(format!("it does not cover {}", missing.join(", ")));
                }
                Err(e) => stale = Some(e.0),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => stale = Some(format!("cannot read it: {e}")),
        }
        let (m, text) = Self::generate(names)?;
        let kept = match write_private(dir, &path, text.as_bytes()) {
            Ok(()) => match stale {
                Some(why) => Kept::Replaced(path, why),
                None => Kept::Written(path),
            },
            Err(e) => Kept::NotKept(format!("cannot write {}: {e}", path.display())),
        };
        Ok((m, kept))
    }

    /// Parses a file written by [`TlsMaterial::self_signed_kept`].
    fn from_kept(text: &str) -> Result<Self, TlsError> {
        if !text.starts_with(NAMES_LINE) {
            return Err(TlsError("it is not a certificate file of tsunagi's".into()));
        }
        let mut m = Self::from_pem(text.as_bytes(), text.as_bytes())?;
        m.self_signed = true;
        Ok(m)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(test: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tsunagi-tls-{test}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Written at the first start (the file only its owner reads), used again at the
    /// next with the same names or fewer; replaced when a name is missing.
    #[test]
    fn a_kept_certificate_is_used_again_until_a_name_is_missing() {
        let dir = scratch("kept").join("state");
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (a, kept) = TlsMaterial::self_signed_kept(Some(&dir), names.clone()).unwrap();
        let file = dir.join(SELF_SIGNED_FILE);
        assert_eq!(kept, Kept::Written(file.clone()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        let (b, kept) = TlsMaterial::self_signed_kept(Some(&dir), names.clone()).unwrap();
        assert_eq!(kept, Kept::Reused(file.clone()));
        assert_eq!(b.fingerprint(), a.fingerprint());
        assert!(b.is_self_signed());
        assert_eq!(b.names(), a.names());
        b.http_config().unwrap();
        let (c, kept) =
            TlsMaterial::self_signed_kept(Some(&dir), vec!["localhost".to_owned()]).unwrap();
        assert_eq!(kept, Kept::Reused(file.clone()));
        assert_eq!(c.fingerprint(), a.fingerprint());
        let mut more = names.clone();
        more.push("198.51.100.7".to_owned());
        let (d, kept) = TlsMaterial::self_signed_kept(Some(&dir), more.clone()).unwrap();
        assert!(
            matches!(&kept, Kept::Replaced(f, why) if *f == file && why.contains("198.51.100.7")),
            "{kept:?}"
        );
        assert_ne!(d.fingerprint(), a.fingerprint());
        let (e, _) = TlsMaterial::self_signed_kept(Some(&dir), more).unwrap();
        assert_eq!(e.fingerprint(), d.fingerprint());
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    }

    /// A damaged or foreign file is replaced, an unwritable place or no directory
    /// leaves a certificate for this run: never an error, never a panic.
    #[test]
    fn a_bad_file_or_place_still_gives_a_certificate() {
        let root = scratch("bad");
        std::fs::create_dir_all(&root).unwrap();
        let file = root.join(SELF_SIGNED_FILE);
        let names = vec!["localhost".to_owned()];
        for junk in [
            &b""[..],
            b"# tsunagi self-signed certificate for: localhost\n-----BEGIN CERTIFICATE-----\nAAAA\n",
            b"-----BEGIN CERTIFICATE-----\n",
            &[0xff, 0xfe, 0x00][..],
        ] {
            std::fs::write(&file, junk).unwrap();
            let (m, kept) = TlsMaterial::self_signed_kept(Some(&root), names.clone()).unwrap();
            assert!(matches!(kept, Kept::Replaced(..)), "{kept:?}");
            m.http_config().unwrap();
            let (again, kept) = TlsMaterial::self_signed_kept(Some(&root), names.clone()).unwrap();
            assert_eq!(kept, Kept::Reused(file.clone()));
            assert_eq!(again.fingerprint(), m.fingerprint());
        }
        // A file where the directory should be.
        let blocked = root.join("blocked");
        std::fs::write(&blocked, b"x").unwrap();
        let (m, kept) =
            TlsMaterial::self_signed_kept(Some(&blocked.join("state")), names.clone()).unwrap();
        assert!(
            matches!(kept, Kept::NotKept(ref why) if why.contains("cannot write")),
            "{kept:?}"
        );
        m.http_config().unwrap();
        let (_, kept) = TlsMaterial::self_signed_kept(None, names).unwrap();
        assert!(
            matches!(kept, Kept::NotKept(ref why) if why.contains("data-dir")),
            "{kept:?}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
