//! A short run of `salon load-test` against a `salon dev` it starts: real
//! WebRTC participants on loopback, two publishing audio and video, four
//! subscribing. No timing thresholds: it checks that media went through.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};

const SALON: &str = env!("CARGO_BIN_EXE_salon");

/// A `salon dev` on a free port, killed when dropped.
struct Server {
    child: Child,
    url: String,
    /// host:port of its Prometheus endpoint.
    metrics: String,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(SALON)
            .args([
                "dev",
                "--port",
                "0",
                "--web-dir",
                "/nonexistent",
                "--prometheus-port",
                "0",
            ])
            .env_remove("LIVEKIT_KEYS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start salon dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut metrics = None;
        let url = loop {
            let line = lines
                .next()
                .expect("salon dev printed its address")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("Prometheus metrics at http://") {
                metrics = rest.strip_suffix("/metrics").map(str::to_owned);
            }
            if let Some(rest) = line.strip_prefix("LiveKit URL: ") {
                break rest.split_whitespace().next().expect("url").to_owned();
            }
        };
        let metrics = metrics.expect("salon dev printed where its metrics are");
        Self {
            child,
            url,
            metrics,
        }
    }

    /// `/metrics`, over a plain HTTP/1.0 request.
    fn scrape(&self) -> String {
        let mut stream = std::net::TcpStream::connect(&self.metrics).expect("connect to metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: salon\r\n\r\n")
            .expect("send request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read metrics");
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        response
    }
}

/// A sample's value in Prometheus's text format: the line that starts with
/// `name` followed by a space.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load_test(server: &Server, extra: &[&str]) -> Output {
    start_load_test(server, extra)
        .wait_with_output()
        .expect("run salon load-test")
}

fn start_load_test(server: &Server, extra: &[&str]) -> Child {
    let pid = server.child.id().to_string();
    let metrics = format!("http://{}/metrics", server.metrics);
    let mut args = vec![
        "load-test",
        "--url",
        &server.url,
        "--server-pid",
        &pid,
        "--server-metrics",
        &metrics,
        "--json",
    ];
    args.extend_from_slice(extra);
    Command::new(SALON)
        .args(&args)
        .env_remove("LIVEKIT_API_KEY")
        .env_remove("LIVEKIT_API_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start salon load-test")
}

#[test]
fn two_publishers_four_subscribers_get_every_packet_through_salon() {
    let server = Server::start();
    let run = start_load_test(
        &server,
        &[
            "--video-publishers",
            "2",
            "--audio-publishers",
            "2",
            "--subscribers",
            "4",
            "--duration",
            "5s",
            "--join-rate",
            "10",
        ],
    );
    // While it runs, the node's metrics count the six participants.
    let mut participants = 0.0;
    for _ in 0..60 {
        participants = sample(&server.scrape(), "salon_participants");
        if participants == 6.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert_eq!(participants, 6.0, "participants in salon_participants");
    let out = run.wait_with_output().expect("run salon load-test");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load-test failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("a JSON report on stdout");
    assert_eq!(report["joined"], 6, "{report:#}");
    assert_eq!(report["failures"].as_array().map(Vec::len), Some(0));
    assert_eq!(report["unmatched_packets"], 0, "payloads arrive unchanged");
    let subscribers = report["subscribers"].as_array().expect("subscribers");
    assert_eq!(subscribers.len(), 4);
    for s in subscribers {
        // Two publishers, each with a camera and a microphone.
        assert_eq!(s["streams_expected"], 4, "{s}");
        assert_eq!(s["streams_received"], 4, "{s}");
        let delivered = s["delivered"].as_f64().expect("delivered");
        assert!(
            delivered > 0.95,
            "subscriber got {delivered} of its packets: {s}"
        );
        assert!(s["bitrate_bps"].as_u64() > Some(0));
    }
    // The server's own figures were read from /proc.
    let server_figures = &report["server"];
    assert!(server_figures["cpu_us_per_forwarded_packet"].as_f64() > Some(0.0));
    assert!(server_figures["rss_mb"].as_f64() > Some(1.0));
    assert!(report["latency_p50_ms"].as_f64().is_some());
    // The server's own delay, from its histogram over the window.
    let delay = &report["server_delay"];
    assert!(delay["count"].as_f64() > Some(100.0), "{delay}");
    assert!(delay["p99_ms"].as_f64() > Some(0.0), "{delay}");

    // What an operator's Prometheus sees of the same run: the datagrams
    // the subscribers got (and RTCP besides), each forwarded packet's
    // delay inside Salon, and the process's CPU time.
    let metrics = server.scrape();
    let received: f64 = subscribers
        .iter()
        .filter_map(|s| s["packets_received"].as_f64())
        .sum();
    assert!(received > 1000.0, "{report:#}");
    assert!(
        sample(&metrics, "salon_datagrams_sent_total") >= received,
        "{metrics}"
    );
    // One delay per datagram that caused output; a second's worth may not
    // be flushed yet.
    let delays = sample(&metrics, "salon_forward_delay_seconds_count");
    assert!(
        delays > received / 8.0,
        "{delays} delays for {received} packets: {metrics}"
    );
    let under_25ms = sample(&metrics, "salon_forward_delay_seconds_bucket{le=\"0.025\"}");
    assert!(under_25ms > 0.0, "{metrics}");
    assert!(
        sample(&metrics, "process_cpu_seconds_total") > 0.0,
        "{metrics}"
    );
}

#[test]
fn a_wrong_secret_ends_the_run_with_a_clear_error() {
    let server = Server::start();
    let out = load_test(
        &server,
        &["--api-secret", "not-the-secret", "--duration", "1s"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no participant could join"), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
}
