//! The self-signed certificate that tsunagi makes by default outlives a restart: the
//! binary started twice on one `--data-dir` serves the same certificate (a browser that
//! accepted it once keeps accepting it), and says so in its log.

mod process;

use std::time::{Duration, Instant};

use process::Process;

/// The log once it names the TLS certificate (the `sha256` field of that line).
fn fingerprint(p: &mut Process) -> (String, String) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let log = p.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("certificate") && l.contains("sha256="))
        {
            let fp = line
                .split("sha256=")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .unwrap_or_default()
                .to_owned();
            return (fp, log);
        }
        assert!(Instant::now() < until, "no TLS certificate line:\n{log}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_self_signed_certificate_is_kept_across_restarts() {
    let data = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tls-kept-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let dir = data.to_str().unwrap();
    // No TLS option at all: the default start.
    let args = ["--data-dir", dir];

    let mut first = Process::start("tls-kept-1", &args, &[]);
    let (fp1, log1) = fingerprint(&mut first);
    assert_eq!(fp1.len(), 32 * 3 - 1, "{log1}");
    assert!(log1.contains("kept for later runs"), "{log1}");
    drop(first);
    assert!(data.join("self-signed.pem").is_file());

    let mut second = Process::start("tls-kept-2", &args, &[]);
    let (fp2, log2) = fingerprint(&mut second);
    assert_eq!(fp2, fp1, "{log2}");
    assert!(log2.contains("kept from an earlier run"), "{log2}");
    drop(second);

    // A name the kept certificate does not cover: a new one replaces it.
    let mut more: Vec<&str> = args.to_vec();
    more.extend(["--external-ip", "198.51.100.7"]);
    let mut third = Process::start("tls-kept-3", &more, &[]);
    let (fp3, log3) = fingerprint(&mut third);
    assert_ne!(fp3, fp1, "{log3}");
    assert!(log3.contains("198.51.100.7"), "{log3}");
    drop(third);
    let _ = std::fs::remove_dir_all(&data);
}
