//! The CPU time a process has used, from `/proc`.

/// CPU seconds (user and system) process `pid` (`self` for this one) has
/// used so far, from `/proc/PID/stat` (whose clock ticks are 1/100 s).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which may hold spaces: the third
    // field of the line first, so utime (14th) and stime (15th) are 11, 12.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}
