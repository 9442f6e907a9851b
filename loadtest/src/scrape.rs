//! The server's own account of its forwarding delay, from the Prometheus
//! histogram Salon serves (`salon_forward_delay_seconds`, read with
//! `--server-metrics`). The generator's latency includes its own receive
//! path, on the same machine; this histogram is the server's share alone.
//! Parsing and quantiles are plain functions; `fetch` is the I/O.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The histogram the generator reads.
pub(crate) const FORWARD_DELAY: &str = "salon_forward_delay_seconds";
/// Largest response read: a node's metrics are a few kilobytes.
const MAX_RESPONSE: u64 = 4 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("--server-metrics must be an http://host:port/path URL: {0}")]
    Url(String),
    #[error("cannot read the server's metrics: {0}")]
    Io(#[from] std::io::Error),
    #[error("the server's metrics took over {0:?}")]
    Timeout(Duration),
    #[error("the server's metrics answered {0}")]
    Status(String),
    #[error("the server's metrics have no {0} histogram")]
    Missing(&'static str),
}

/// A histogram's cumulative buckets, by upper bound (the last is +Inf).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Buckets(Vec<(f64, f64)>);

impl Buckets {
    /// The buckets of histogram `name` in Prometheus's text format.
    pub(crate) fn parse(text: &str, name: &str) -> Option<Self> {
        let prefix = format!("{name}_bucket{{le=\"");
        let mut buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(&prefix)?;
                let (le, count) = rest.split_once("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        if buckets.is_empty() {
            return None;
        }
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Self(buckets))
    }

    /// What was added between `earlier` and `self` (same buckets).
    pub(crate) fn since(&self, earlier: &Buckets) -> Buckets {
        Buckets(
            self.0
                .iter()
                .map(|&(le, count)| {
                    let before = earlier
                        .0
                        .iter()
                        .find(|(l, _)| *l == le)
                        .map_or(0.0, |(_, c)| *c);
                    (le, (count - before).max(0.0))
                })
                .collect(),
        )
    }

    pub(crate) fn count(&self) -> f64 {
        self.0.last().map_or(0.0, |(_, c)| *c)
    }

    /// The `q` quantile, interpolated linearly inside its bucket as
    /// Prometheus's `histogram_quantile` does; in the +Inf bucket, the
    /// largest finite bound (a floor). None when the histogram is empty.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.0 {
            if count >= rank {
                if le.is_infinite() {
                    return Some(lower.0);
                }
                let inside = count - lower.1;
                let share = if inside > 0.0 {
                    (rank - lower.1) / inside
                } else {
                    1.0
                };
                return Some(lower.0 + (le - lower.0) * share);
            }
            lower = (le, count);
        }
        Some(lower.0)
    }
}

/// GETs `url` (plain HTTP; the server is on this machine) and returns the
/// body.
pub(crate) async fn fetch(url: &str) -> Result<String, ScrapeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ScrapeError::Url(url.to_owned()))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(ScrapeError::Url(url.to_owned()));
    }
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream
            .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.take(MAX_RESPONSE).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| ScrapeError::Timeout(TIMEOUT))??;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ScrapeError::Status(status.to_owned()));
    }
    Ok(body.to_owned())
}

/// The forwarding-delay histogram at `url` now.
pub(crate) async fn forward_delay(url: &str) -> Result<Buckets, ScrapeError> {
    Buckets::parse(&fetch(url).await?, FORWARD_DELAY).ok_or(ScrapeError::Missing(FORWARD_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP salon_forward_delay_seconds x\n\
        # TYPE salon_forward_delay_seconds histogram\n\
        salon_forward_delay_seconds_bucket{le=\"0.001\"} 50\n\
        salon_forward_delay_seconds_bucket{le=\"0.002\"} 90\n\
        salon_forward_delay_seconds_bucket{le=\"0.005\"} 99\n\
        salon_forward_delay_seconds_bucket{le=\"+Inf\"} 100\n\
        salon_forward_delay_seconds_sum 0.2\n\
        salon_forward_delay_seconds_count 100\n\
        salon_datagrams_sent_total 1234\n";

    #[test]
    fn quantiles_interpolate_inside_their_bucket() {
        let b = Buckets::parse(TEXT, FORWARD_DELAY).expect("parsed");
        assert_eq!(b.count(), 100.0);
        // Rank 50 is the top of the first bucket.
        assert!((b.quantile(0.5).expect("p50") - 0.001).abs() < 1e-9);
        // Rank 70: halfway through (0.001, 0.002].
        assert!((b.quantile(0.7).expect("p70") - 0.0015).abs() < 1e-9);
        // Rank 99: the top of (0.002, 0.005].
        assert!((b.quantile(0.99).expect("p99") - 0.005).abs() < 1e-9);
        // Rank 100 falls in +Inf: the largest finite bound.
        assert_eq!(b.quantile(1.0), Some(0.005));
    }

    #[test]
    fn a_window_is_the_difference_of_two_readings() {
        let before = Buckets::parse(TEXT, FORWARD_DELAY).expect("before");
        // The same spread again: 50, 40, 9 and 1 more in each bucket.
        let after = Buckets::parse(
            &TEXT
                .replace("} 50", "} 100")
                .replace("} 90", "} 180")
                .replace("} 99", "} 198")
                .replace("\"+Inf\"} 100", "\"+Inf\"} 200"),
            FORWARD_DELAY,
        )
        .expect("after");
        let window = after.since(&before);
        assert_eq!(window.count(), 100.0);
        assert!((window.quantile(0.5).expect("p50") - 0.001).abs() < 1e-9);
        assert_eq!(Buckets(Vec::new()).quantile(0.5), None);
    }

    #[test]
    fn other_metrics_are_not_a_histogram() {
        assert_eq!(Buckets::parse(TEXT, "salon_datagrams_sent"), None);
        assert_eq!(Buckets::parse("", FORWARD_DELAY), None);
    }
}
