//! The report of a run: a table for people, JSON for scripts.

use crate::Target;
use crate::ledger::{Figures, percentile};
use crate::media::Quality;
use crate::procstat::ProcSample;
use std::fmt::Write as _;
use std::time::Duration;

#[derive(Debug, Clone, serde::Serialize)]
pub struct JoinFigures {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl JoinFigures {
    pub(crate) fn new(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        let ms = |p| percentile(&times, p).map(|d| d.as_secs_f64() * 1000.0);
        Self {
            p50_ms: ms(0.50),
            p95_ms: ms(0.95),
            p99_ms: ms(0.99),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ServerFigures {
    /// CPU time the server used during the window, in seconds.
    pub cpu_s: f64,
    /// Of one core.
    pub cpu_percent: f64,
    /// The headline: server CPU time over packets subscribers received.
    pub cpu_us_per_forwarded_packet: Option<f64>,
    pub forwarded_packets_per_cpu_s: Option<f64>,
    pub rss_mb: f64,
    /// Growth of resident memory since before the first join, per
    /// subscribing participant.
    pub rss_per_subscriber_kb: Option<f64>,
}

impl ServerFigures {
    pub(crate) fn new(
        baseline: ProcSample,
        start: ProcSample,
        end: ProcSample,
        wall: Duration,
        forwarded: u64,
        subscribers: usize,
    ) -> Self {
        let cpu = end.cpu.saturating_sub(start.cpu).as_secs_f64();
        let grown = end.rss_bytes as f64 - baseline.rss_bytes as f64;
        Self {
            cpu_s: cpu,
            cpu_percent: 100.0 * cpu / wall.as_secs_f64().max(1e-9),
            cpu_us_per_forwarded_packet: (forwarded > 0).then(|| cpu * 1e6 / forwarded as f64),
            forwarded_packets_per_cpu_s: (cpu > 0.0).then(|| forwarded as f64 / cpu),
            rss_mb: end.rss_bytes as f64 / 1e6,
            rss_per_subscriber_kb: (subscribers > 0).then(|| grown / 1e3 / subscribers as f64),
        }
    }
}

/// The server's own forwarding delay over the window, from its histogram
/// (`--server-metrics`): from when the kernel received a datagram to when
/// its last copy went to the kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DelayFigures {
    /// Datagrams the histogram counted.
    pub count: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl DelayFigures {
    pub(crate) fn new(window: &crate::scrape::Buckets) -> Self {
        let ms = |q| window.quantile(q).map(|s| s * 1000.0);
        Self {
            count: window.count(),
            p50_ms: ms(0.50),
            p99_ms: ms(0.99),
        }
    }
}

/// What the run was asked to do.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Params {
    pub target: Target,
    pub url: String,
    pub room: String,
    pub video_publishers: usize,
    pub audio_publishers: usize,
    pub subscribers: usize,
    pub publishers_subscribe: bool,
    pub simulcast: bool,
    pub video_resolution: Quality,
    pub pacing_factor: f64,
    pub duration_s: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub params: Params,
    pub participants: usize,
    pub joined: usize,
    pub failures: Vec<String>,
    pub join: JoinFigures,
    #[serde(flatten)]
    pub figures: Figures,
    pub server: Option<ServerFigures>,
    pub server_delay: Option<DelayFigures>,
    /// The load generator's own CPU, of one core: near 100% per core used
    /// means the generator, not the server, sets the pace.
    pub generator_cpu_percent: f64,
    /// Datagrams the kernel dropped during the window (the machine's and
    /// the network namespace's counts, `netstat.rs`): a loss the server
    /// did not make, which its feedback still reports.
    pub kernel_drops: Option<salon_common::netstat::KernelDrops>,
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

impl Report {
    /// The share of expected packets that arrived, over all subscribers.
    pub fn delivered(&self) -> f64 {
        if self.figures.packets_expected == 0 {
            0.0
        } else {
            self.figures.packets_received as f64 / self.figures.packets_expected as f64
        }
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let f = &self.figures;
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>10} {:>10} {:>10} {:>8} {:>12}",
            "subscriber", "streams", "received", "expected", "delivered", "loss", "bitrate"
        );
        for s in &f.subscribers {
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>10} {:>10} {:>9.2}% {:>7.2}% {:>7.2} Mb/s",
                format!("#{}", s.participant),
                format!("{}/{}", s.streams_received, s.streams_expected),
                s.packets_received,
                s.packets_expected,
                s.delivered * 100.0,
                s.loss * 100.0,
                s.bitrate_bps as f64 / 1e6,
            );
        }
        let _ = writeln!(out);
        let row = |out: &mut String, k: &str, v: String| {
            let _ = writeln!(out, "  {k:<34} {v}");
        };
        row(
            &mut out,
            "participants joined",
            format!("{}/{}", self.joined, self.participants),
        );
        row(
            &mut out,
            "join time p50 / p95 / p99",
            format!(
                "{} / {} / {} ms",
                opt(self.join.p50_ms, 0),
                opt(self.join.p95_ms, 0),
                opt(self.join.p99_ms, 0)
            ),
        );
        row(&mut out, "window", format!("{:.1} s", f.window_s));
        row(
            &mut out,
            "packets sent / expected / received",
            format!(
                "{} / {} / {}",
                f.packets_sent, f.packets_expected, f.packets_received
            ),
        );
        row(
            &mut out,
            "delivered",
            format!("{:.2} %", self.delivered() * 100.0),
        );
        row(
            &mut out,
            "forwarded packets per second",
            format!("{:.0}", f.forwarded_packets_per_s),
        );
        row(
            &mut out,
            "forwarding latency p50 / p99",
            format!(
                "{} / {} ms",
                opt(f.latency_p50_ms, 2),
                opt(f.latency_p99_ms, 2)
            ),
        );
        if let Some(d) = &self.server_delay {
            row(
                &mut out,
                "inside the server p50 / p99",
                format!("{} / {} ms", opt(d.p50_ms, 3), opt(d.p99_ms, 3)),
            );
        }
        if let Some(s) = &self.server {
            row(
                &mut out,
                "server CPU",
                format!("{:.2} s, {:.1} % of one core", s.cpu_s, s.cpu_percent),
            );
            row(
                &mut out,
                "server CPU per forwarded packet",
                format!("{} µs", opt(s.cpu_us_per_forwarded_packet, 2)),
            );
            row(
                &mut out,
                "server RSS",
                format!(
                    "{:.1} MB, {} kB per subscriber",
                    s.rss_mb,
                    opt(s.rss_per_subscriber_kb, 0)
                ),
            );
        }
        row(
            &mut out,
            "load generator CPU",
            format!("{:.1} % of one core", self.generator_cpu_percent),
        );
        if let Some(k) = self.kernel_drops.filter(|k| k.any()) {
            row(
                &mut out,
                "kernel drops (backlog, UDP rcv/snd)",
                format!("{} / {} / {}", k.backlog, k.udp_rcvbuf, k.udp_sndbuf),
            );
        }
        if f.unmatched_packets > 0 {
            row(
                &mut out,
                "packets matching nothing sent",
                f.unmatched_packets.to_string(),
            );
        }
        for failure in &self.failures {
            let _ = writeln!(out, "  failed: {failure}");
        }
        out
    }
}
