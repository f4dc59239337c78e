//! The CPU time a process has used, from `/proc`.

/// CPU seconds (user and system) process `pid` (`self` for this one) has
/// used so far, from `/proc/PID/stat` (whose clock ticks are 1/100 s).
pub fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat_seconds(&stat)
}

/// CPU seconds the librdkafka broker threads (`rdk:broker…`, which send
/// and receive) of process `pid` have used so far. noida-db answers an
/// empty fetch at once, so each idle consumer's broker thread polls it in
/// a loop: this is where that CPU goes.
#[allow(dead_code)] // used by the end_to_end bench, not by every bench that includes this file
pub fn broker_thread_seconds(pid: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_once('(')
                .is_some_and(|(_, rest)| rest.starts_with("rdk:broker"))
        })
        .map(|stat| stat_seconds(&stat))
        .sum()
}

/// utime + stime of a `/proc/…/stat` line, in seconds.
fn stat_seconds(stat: &str) -> f64 {
    // The fields after the command name, which may hold spaces: the third
    // field of the line first, so utime (14th) and stime (15th) are 11, 12.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}
