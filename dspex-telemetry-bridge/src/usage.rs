//! A process's resident memory and CPU time, read from the OS (`/proc/<pid>/stat` on Linux).

/// What a process uses now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourceUsage {
    /// Resident memory (RSS), in bytes.
    pub memory_bytes: u64,
    /// CPU time spent so far, user and system, in seconds.
    pub cpu_seconds: f64,
}

impl ResourceUsage {
    /// This process's own usage (`None` where the OS offers no cheap way to read it).
    pub fn of_this_process() -> Option<ResourceUsage> {
        read(std::process::id())
    }

    /// The usage of process `pid` (`None` if it is gone, or where the OS offers no cheap way
    /// to read it: only Linux's `/proc` is read).
    pub fn of(pid: u32) -> Option<ResourceUsage> {
        read(pid)
    }
}

#[cfg(target_os = "linux")]
fn read(pid: u32) -> Option<ResourceUsage> {
    use std::sync::OnceLock;
    static SCALE: OnceLock<(f64, u64)> = OnceLock::new();
    let &(ticks, page) = SCALE.get_or_init(|| {
        // SAFETY: sysconf takes a plain integer and touches no memory of this process.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (
            if ticks > 0 { ticks as f64 } else { 100.0 },
            u64::try_from(page).ok().filter(|&p| p > 0).unwrap_or(4096),
        )
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat, ticks, page)
}

#[cfg(not(target_os = "linux"))]
fn read(_pid: u32) -> Option<ResourceUsage> {
    None
}

/// `/proc/<pid>/stat`: `pid (comm) state ppid …`, where `comm` may hold spaces and
/// parentheses; the fields after its last `)` are counted from `state` (field 3): `utime` is
/// field 14, `stime` 15, `rss` (pages) 24.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn parse_stat(stat: &str, ticks_per_second: f64, page_bytes: u64) -> Option<ResourceUsage> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime, rss) = (field(14)?, field(15)?, field(24)?);
    Some(ResourceUsage {
        memory_bytes: rss.saturating_mul(page_bytes),
        cpu_seconds: (utime + stime) as f64 / ticks_per_second,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_whatever_the_command_name() {
        let line = "4242 (py (thon) 3)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 \
                    3 0 123456 512000000 25600 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 \
                    1 0 0 0 0 0";
        let usage = parse_stat(line, 100.0, 4096).unwrap();
        assert_eq!(usage.memory_bytes, 25_600 * 4096);
        assert!((usage.cpu_seconds - 3.0).abs() < 1e-9, "{usage:?}");
        assert_eq!(parse_stat("4242 (x) S 1 2", 100.0, 4096), None);
        assert_eq!(parse_stat("no parenthesis", 100.0, 4096), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_and_cpu_time() {
        let before = ResourceUsage::of_this_process().unwrap();
        // Touch 64 MiB, page by page, and spend some CPU time.
        let mut block = vec![0u8; 64 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = i as u8;
        }
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box((&block, x));
        let after = ResourceUsage::of_this_process().unwrap();
        assert!(
            after.memory_bytes >= before.memory_bytes + (48 << 20),
            "{before:?} → {after:?}"
        );
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "{before:?} → {after:?}"
        );
        assert_eq!(ResourceUsage::of(u32::MAX), None);
    }
}
