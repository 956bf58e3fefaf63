//! What the kernel says about a process the harness started: CPU time from `/proc/PID/stat`,
//! resident memory from `/proc/PID/status`, and bytes a folder takes on disk. Linux only, as
//! the machines are.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::Context;

/// CPU time and memory of one process at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU time, in seconds.
    pub cpu_s: f64,
    /// Peak resident set (VmHWM), in KiB.
    pub peak_rss_kib: u64,
    /// Current resident set (VmRSS), in KiB.
    pub rss_kib: u64,
}

impl ProcSample {
    pub fn peak_rss_mib(&self) -> f64 {
        self.peak_rss_kib as f64 / 1024.0
    }
}

/// Clock ticks per second for `/proc/PID/stat`; `getconf` knows, and 100 is Linux's value on
/// every architecture these machines use.
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub fn sample(pid: u32) -> anyhow::Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces; fields count from after it.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc stat")?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_s = (ticks(11) + ticks(12)) as f64 / ticks_per_second();

    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib = |key: &str| {
        status
            .lines()
            .find(|line| line.starts_with(key))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        cpu_s,
        peak_rss_kib: kib("VmHWM:"),
        rss_kib: kib("VmRSS:"),
    })
}

/// CPU time of every thread of process `pid` so far, in nanoseconds, from each thread's
/// `/proc/PID/task/TID/schedstat`: precise where `/proc/PID/stat`'s clock ticks (10 ms) are
/// too coarse for a round of some 50 ms. A thread that ends between the listing and its read
/// is skipped, and a thread that ended before the listing no longer counts: sample a process
/// whose threads live as long as the window (tokio's workers do; its blocking pool's idle
/// threads may go after 10 s).
pub fn cpu_ns(pid: u32) -> anyhow::Result<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("listing /proc/{pid}/task"))?;
    Ok(tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
        .sum())
}

/// Bytes of every file under `path`, as `du --apparent-size` counts them.
pub fn folder_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => folder_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// The value at quantile `q` (0..=1) of `values`, sorted in place; `None` when empty.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * (values.len() - 1) as f64).round() as usize;
    Some(values[rank.min(values.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_of_this_process_has_memory_and_cpu() {
        let sample = sample(std::process::id()).unwrap();
        assert!(sample.peak_rss_kib > 0);
        assert!(sample.rss_kib > 0);
        assert!(sample.cpu_s >= 0.0);
    }

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let pid = std::process::id();
        let before = cpu_ns(pid).unwrap();
        let started = std::time::Instant::now();
        let mut spin = 0u64;
        // Spins until the counter shows 10 ms of CPU, or gives up after 10 s of wall time
        // (a counter that never moves).
        while cpu_ns(pid).unwrap() - before < 10_000_000
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            for _ in 0..10_000 {
                spin = std::hint::black_box(spin.wrapping_add(1));
            }
        }
        let after = cpu_ns(pid).unwrap();
        assert!(after - before >= 10_000_000, "{before} → {after} ns");
    }

    #[test]
    fn quantiles_pick_ranked_values() {
        let mut values = vec![5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&mut values, 0.5), Some(3.0));
        assert_eq!(quantile(&mut values, 0.0), Some(1.0));
        assert_eq!(quantile(&mut values, 1.0), Some(5.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
