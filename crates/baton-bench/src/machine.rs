//! What the figures were measured on.

use std::fmt::Write;

pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model: field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".to_owned()),
            memory: field(&meminfo, "MemTotal")
                .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or_else(
                    || "unknown".to_owned(),
                    |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
                ),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|text| text.trim().to_owned())
                .unwrap_or_else(|_| "unknown".to_owned()),
        }
    }

    pub fn markdown(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "- CPUs (nproc): {}", self.cpus);
        let _ = writeln!(text, "- CPU model: {}", self.cpu_model);
        let _ = writeln!(text, "- memory: {}", self.memory);
        let _ = writeln!(text, "- kernel: Linux {}", self.kernel);
        text
    }
}

/// The value of the first `name: value` line of a `/proc` file.
pub fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_fields() {
        let text = "processor\t: 0\nmodel name\t: Some CPU @ 2.0GHz\nVmRSS:\t  1234 kB\n";
        assert_eq!(
            field(text, "model name").as_deref(),
            Some("Some CPU @ 2.0GHz")
        );
        assert_eq!(field(text, "VmRSS").as_deref(), Some("1234 kB"));
        assert_eq!(field(text, "missing"), None);
    }
}
