//! A short run of `salon load-test` against a `salon dev` it starts: real
//! WebRTC participants on loopback, two publishing audio and video, four
//! subscribing. No timing thresholds: it checks that media went through.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

const SALON: &str = env!("CARGO_BIN_EXE_salon");

/// A `salon dev` on a free port, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start() -> Self {
        let mut child = Command::new(SALON)
            .args(["dev", "--port", "0", "--web-dir", "/nonexistent"])
            .env_remove("LIVEKIT_KEYS")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start salon dev");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("salon dev printed its address")
                .expect("read stdout");
            if let Some(rest) = line.strip_prefix("LiveKit URL: ") {
                break rest.split_whitespace().next().expect("url").to_owned();
            }
        };
        Self { child, url }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load_test(server: &Server, extra: &[&str]) -> Output {
    let pid = server.child.id().to_string();
    let mut args = vec![
        "load-test",
        "--url",
        &server.url,
        "--server-pid",
        &pid,
        "--json",
    ];
    args.extend_from_slice(extra);
    Command::new(SALON)
        .args(&args)
        .env_remove("LIVEKIT_API_KEY")
        .env_remove("LIVEKIT_API_SECRET")
        .output()
        .expect("run salon load-test")
}

#[test]
fn two_publishers_four_subscribers_get_every_packet_through_salon() {
    let server = Server::start();
    let out = load_test(
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
