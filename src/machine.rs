//! What this machine can give a run: its memory (the least of physical memory, the
//! control group's limit and the process's address-space limit, since any of them ends
//! a stage that passes it) and a rough arithmetic rate, so `plan` can refuse a stage
//! that cannot fit and say how long a legal but huge one would take.

use std::path::Path;

/// The most memory a stage of this process can have, in bytes (`None` where the
/// system does not say).
pub fn memory_limit() -> Option<f64> {
    [meminfo("MemTotal:"), cgroup_limit(), address_space_limit()]
        .into_iter()
        .flatten()
        .reduce(f64::min)
}

/// Memory free for a stage starting now: what the kernel could hand out without
/// swapping, within the control group's limit and what is left of the process's
/// address space.
pub fn memory_available() -> Option<f64> {
    let cgroup = cgroup_limit().map(|limit| limit - cgroup_usage().unwrap_or(0.0));
    let address_space =
        address_space_limit().map(|limit| limit - address_space_used().unwrap_or(0.0));
    [meminfo("MemAvailable:"), cgroup, address_space]
        .into_iter()
        .flatten()
        .reduce(f64::min)
}

/// This process's virtual size, what `ulimit -v` limits.
fn address_space_used() -> Option<f64> {
    kib_field("/proc/self/status", "VmSize:")
}

/// Sustained single-precision arithmetic of this machine, in FLOP/s, for time
/// estimates: 30 GFLOP/s per core. On 2 Zen 4 cores the laptop U-Net's training
/// reached 77 GFLOP/s by the cost model's count (227 s estimated as 290 s) and the
/// 2D MLP's 165 (estimates 2.7 times too long); a CPU without AVX-512 is about half
/// as fast. Good enough to tell minutes from days, which is all `plan` says.
pub fn flops_per_second() -> f64 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    30e9 * cores as f64
}

/// `/proc/meminfo`'s field in bytes.
fn meminfo(field: &str) -> Option<f64> {
    kib_field("/proc/meminfo", field)
}

/// A `Field:   123 kB` line of a `/proc` file, in bytes.
fn kib_field(file: &str, field: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    let kib: f64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024.0)
}

/// The memory limit of this process's control group (v2 `memory.max`, or v1
/// `memory.limit_in_bytes`); "max" and v1's huge sentinel mean none.
fn cgroup_limit() -> Option<f64> {
    cgroup_file("memory.max", "memory.limit_in_bytes")
}

fn cgroup_usage() -> Option<f64> {
    cgroup_file("memory.current", "memory.usage_in_bytes")
}

fn cgroup_file(v2: &str, v1: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mut candidates = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            candidates.push(Path::new("/sys/fs/cgroup").join(path).join(v2));
        } else if controllers.split(',').any(|c| c == "memory") {
            candidates.push(Path::new("/sys/fs/cgroup/memory").join(path).join(v1));
            candidates.push(Path::new("/sys/fs/cgroup/memory").join(v1));
        }
    }
    candidates.into_iter().find_map(|file| {
        let value: f64 = std::fs::read_to_string(file).ok()?.trim().parse().ok()?;
        // v1 writes "no limit" as the largest page-aligned signed 64-bit value.
        (value < 1e18).then_some(value)
    })
}

/// `ulimit -v`, from `/proc/self/limits`.
fn address_space_limit() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max address space"))?;
    line["Max address space".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The machine a run ran on, as its record and report state it.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub host: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_bytes: f64,
    pub os: String,
}

impl Machine {
    /// This machine.
    pub fn this() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        Machine {
            host: read("/proc/sys/kernel/hostname").trim().to_string(),
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_bytes: meminfo("MemTotal:").unwrap_or(0.0),
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        }
    }

    /// One line: `host (AMD EPYC, 2 cores, 23.5 GiB, linux x86_64)`.
    pub fn line(&self) -> String {
        format!(
            "{} ({}, {} cores, {}, {})",
            self.host,
            self.cpu,
            self.cores,
            human_bytes(self.memory_bytes),
            self.os
        )
    }
}

/// Bytes as people read them (1.5 GiB).
pub fn human_bytes(bytes: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes:.0} B"),
        _ if value >= 1e4 => format!("{:.1e} {}", value, units[unit]),
        _ => format!("{value:.1} {}", units[unit]),
    }
}

/// A duration as people read them (40 s, 12 min, 3.5 h, 2.1 days, 4e6 years).
pub fn human_seconds(seconds: f64) -> String {
    const DAY: f64 = 86_400.0;
    const YEAR: f64 = 365.25 * DAY;
    if seconds < 60.0 {
        format!("{seconds:.0} s")
    } else if seconds < 3600.0 {
        format!("{:.0} min", seconds / 60.0)
    } else if seconds < DAY {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds < YEAR {
        format!("{:.1} days", seconds / DAY)
    } else if seconds < 1e4 * YEAR {
        format!("{:.0} years", seconds / YEAR)
    } else {
        format!("{:.0e} years", seconds / YEAR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(human_bytes(512.0), "512 B");
        assert_eq!(human_bytes(1.5 * 1024.0 * 1024.0 * 1024.0), "1.5 GiB");
        assert_eq!(human_bytes(8e19), "69.4 EiB");
        assert_eq!(human_seconds(42.0), "42 s");
        assert_eq!(human_seconds(720.0), "12 min");
        assert_eq!(human_seconds(3.0 * 86_400.0), "3.0 days");
        assert_eq!(human_seconds(3e13), "1e6 years");
    }

    /// On Linux the machine always says how much memory it has, and a stage can never
    /// have more than is installed.
    #[test]
    fn the_memory_limit_is_known_and_at_most_physical_memory() {
        let limit = memory_limit().expect("Linux reports memory");
        let total = meminfo("MemTotal:").unwrap();
        assert!(limit > 0.0 && limit <= total, "{limit} of {total}");
        assert!(memory_available().unwrap() <= total);
    }
}
