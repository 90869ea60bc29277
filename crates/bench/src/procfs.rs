//! The server's CPU time and memory, read from `/proc/PID` (Linux).

use std::fs;

/// `USER_HZ`: the unit of the times in `/proc/PID/stat`. Fixed at 100 by the Linux ABI
/// on every architecture this runs on, whatever the kernel's internal HZ.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: fields start after
    // the last ')'. Field 3 (state) is the first after it; utime and stime are 14, 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// A `kB` line of `/proc/PID/status` (VmRSS, VmHWM), in KiB.
fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix(':')?;
        v.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Resident memory now, KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmRSS")
}

/// Anonymous resident memory now (heap, stacks: `RssAnon`), KiB. Unlike `VmRSS` it leaves
/// out the pages of the binary and its libraries, which a server maps once whatever its
/// load (the code paths first run when media flows add megabytes of them).
pub fn anon_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "RssAnon")
}

/// Peak resident memory since the process started, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(cpu_seconds(me).unwrap() >= 0.0);
        assert!(rss_kib(me).unwrap() > 0);
        assert!(peak_rss_kib(me).unwrap() >= rss_kib(me).unwrap() / 2);
        assert!(anon_kib(me).unwrap() > 0);
        assert!(anon_kib(me).unwrap() <= rss_kib(me).unwrap());
        assert!(cpu_seconds(u32::MAX).is_none());
    }
}
