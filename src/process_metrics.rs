//! The Prometheus client conventions' `process_*` metrics, read from
//! `/proc/self` when `/metrics` is rendered (Linux only; elsewhere they are
//! left out rather than reported as zeros).

use std::fmt::Write;

/// What `/proc/self/stat` says, in its own units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// User and system CPU time, clock ticks.
    utime: u64,
    stime: u64,
    /// When the process started, clock ticks after boot.
    starttime: u64,
    /// Virtual memory, bytes.
    vsize: u64,
    /// Resident pages.
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces
/// and parentheses, so fields are counted after its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state); field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
        vsize: field(23)?,
        rss_pages: field(24)?,
    })
}

/// `btime` of `/proc/stat`: the boot time, Unix seconds.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Appends the `process_*` families, each only if it could be read.
#[cfg(target_os = "linux")]
pub fn render(out: &mut String) {
    // SAFETY: sysconf and getrlimit only read process-wide values; the
    // rlimit struct is ours and fully written on success.
    let (ticks, page, max_fds) = unsafe {
        let mut limit = std::mem::zeroed::<libc::rlimit>();
        let max_fds = (libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0)
            .then_some(limit.rlim_cur as f64);
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
            max_fds,
        )
    };
    let stat = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|t| parse_stat(&t));
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| parse_boot_time(&t));
    // Counts the directory handle read_dir holds too, as other clients do.
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let mut rows: Vec<(&str, &str, &str, Option<f64>)> = Vec::new();
    if let Some(s) = stat.filter(|_| ticks > 0 && page > 0) {
        let ticks = ticks as f64;
        rows.push((
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            Some((s.utime + s.stime) as f64 / ticks),
        ));
        rows.push((
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            Some(s.rss_pages as f64 * page as f64),
        ));
        rows.push((
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            Some(s.vsize as f64),
        ));
        rows.push((
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            boot.map(|b| b as f64 + s.starttime as f64 / ticks),
        ));
    }
    rows.push((
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        open_fds,
    ));
    rows.push((
        "process_max_fds",
        "gauge",
        "Maximum number of open file descriptors.",
        max_fds,
    ));
    for (name, kind, help, value) in rows {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub fn render(_out: &mut String) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        // A command name with a space and a parenthesis, as a process may
        // name itself.
        let line = "4242 (rollcall (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    150 25 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                utime: 150,
                stime: 25,
                starttime: 123456,
                vsize: 987654321,
                rss_pages: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (truncated"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn boot_time_is_btime() {
        let text = "cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n";
        assert_eq!(parse_boot_time(text), Some(1_700_000_000));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_memory_descriptors_and_a_start() {
        let mut out = String::new();
        render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} in {out}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
        assert!(value("process_cpu_seconds_total") >= 0.0);
    }
}
