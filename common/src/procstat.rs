//! CPU time and resident memory of a process on this machine, from /proc.
//! CPU time is the headline figure: divided by the packets forwarded, it
//! holds on a noisy two-core machine where absolute rates do not.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// User plus system time of all its threads, those gone included.
    pub cpu: Duration,
    pub rss_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{0}: {1}")]
    Read(String, std::io::Error),
    #[error("cannot parse /proc/{0}")]
    Parse(String),
}

pub fn sample(pid: &str) -> Result<ProcSample, ProcError> {
    let read = |file: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .map_err(|e| ProcError::Read(format!("{pid}/{file}"), e))
    };
    let stat = read("stat")?;
    let status = read("status")?;
    let ticks = parse_stat_ticks(&stat).ok_or_else(|| ProcError::Parse(format!("{pid}/stat")))?;
    let rss_kib =
        parse_status_rss_kib(&status).ok_or_else(|| ProcError::Parse(format!("{pid}/status")))?;
    Ok(ProcSample {
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64),
        rss_bytes: rss_kib * 1024,
    })
}

/// utime + stime, in clock ticks: fields 14 and 15 of /proc/<pid>/stat,
/// counted after the command name, which may itself hold spaces and parens.
fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn parse_status_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The kernel's USER_HZ, from this process's auxiliary vector (AT_CLKTCK),
/// so no libc call is needed; 100 on every Linux we know of.
fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
        return 100;
    };
    auxv.chunks_exact(16)
        .map(|pair| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().unwrap_or([0; 8]));
            (word(&pair[..8]), word(&pair[8..]))
        })
        .find(|(key, _)| *key == AT_CLKTCK)
        .map(|(_, value)| value)
        .filter(|v| *v > 0)
        .unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_fields_after_a_name_with_spaces_and_parens() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 2000 0 0 0 \
                    1234 567 0 0 20 0 9 0 100 200000000 5000 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_rss_from_status() {
        let status = "Name:\tsalon\nVmPeak:\t  9000 kB\nVmRSS:\t   51234 kB\nThreads:\t9\n";
        assert_eq!(parse_status_rss_kib(status), Some(51234));
    }

    #[test]
    fn this_process_burns_cpu_and_holds_memory() {
        let me = std::process::id().to_string();
        let before = sample(&me).expect("sample");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = sample(&me).expect("sample");
        assert!(after.cpu > before.cpu, "{before:?} {after:?}");
        assert!(after.rss_bytes > 1 << 20);
        assert!(sample("0").is_err());
    }
}
