//! What the benchmarks measure with: CPU seconds of this process, this thread and the database
//! and broker servers on this machine (procfs), and one percentile helper.

/// Returns the value at `quantile` (0..=1) of sorted samples, nearest rank; 0 when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], quantile: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let index = ((sorted.len() - 1) as f64 * quantile.clamp(0.0, 1.0)).round() as usize;
    sorted[index]
}

/// Returns the calling thread's user + system CPU seconds from `/proc/thread-self/stat`.
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/thread-self/stat")
}

/// Returns this process's user + system CPU seconds from `/proc/self/stat`.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds_of("/proc/self/stat")
}

/// Returns the user + system CPU seconds another process (of this machine) used so far.
pub fn cpu_seconds_of_pid(pid: u32) -> f64 {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// Reads user + system CPU seconds from a `stat` file of procfs (100 ticks/s).
fn cpu_seconds_of(path: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|value| value.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields; `fields` starts at the 3rd.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by the database and broker servers running on this machine; `None`
/// for a server with no process here (it runs elsewhere, or procfs hides it).
#[derive(Debug, Clone, Copy)]
pub struct ServerCpu {
    pub database: Option<f64>,
    pub broker: Option<f64>,
}

impl ServerCpu {
    /// Sums the CPU of every process named `postgres` (the server and its backends) and
    /// `beam.smp` (RabbitMQ's Erlang VM).
    pub fn read() -> Self {
        let mut cpu = ServerCpu {
            database: None,
            broker: None,
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return cpu;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
                continue;
            };
            let server = match name.trim_end() {
                "postgres" => &mut cpu.database,
                "beam.smp" => &mut cpu.broker,
                _ => continue,
            };
            let seconds = cpu_seconds_of(&path.join("stat").to_string_lossy());
            *server = Some(server.unwrap_or(0.0) + seconds);
        }
        cpu
    }

    /// Returns the CPU used between `earlier` and this reading. A backend that exited in
    /// between takes its CPU with it, so the database's figure is a lower bound.
    pub fn since(&self, earlier: &ServerCpu) -> ServerCpu {
        let delta = |now: Option<f64>, before: Option<f64>| Some((now? - before?).max(0.0));
        ServerCpu {
            database: delta(self.database, earlier.database),
            broker: delta(self.broker, earlier.broker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the nearest-rank percentile of sorted samples, and 0 for no samples.
    #[test]
    fn percentiles_of_sorted_samples() {
        let samples: Vec<i64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 0.5), 51);
        assert_eq!(percentile(&samples, 0.99), 99);
        assert_eq!(percentile(&samples, 1.0), 100);
        assert_eq!(percentile::<i64>(&[], 0.99), 0);
    }
}
