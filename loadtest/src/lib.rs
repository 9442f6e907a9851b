//! `salon load-test`: real WebRTC participants (ICE, DTLS, SRTP, RTCP, on
//! webrtc-rs like the SFU) that join a server, publish synthetic VP8 and
//! Opus and subscribe, and books that say what the server delivered, how
//! late, and at what CPU cost per forwarded packet.
//!
//! `ledger` and `procstat` are plain code with their own tests; `peer`,
//! `livekit` and `janus` are the async shells that drive connections.

mod janus;
mod ledger;
mod livekit;
mod media;
mod pacer;
mod peer;
use salon_common::{netstat, procstat};
mod report;
mod scrape;

pub use ledger::{Figures, Kind, SubscriberFigures};
pub use media::Quality;
pub use report::{DelayFigures, JoinFigures, Params, Report, ServerFigures};

use ledger::Ledger;
use media::{AudioClip, VideoClip};
use peer::{Shared, lock};
use salon_signaling::auth::{self, TokenSpec, VideoGrant};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, watch};

/// The longest run the tool accepts: every load loop here is bounded.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// How long subscribers get to see every stream before the window opens.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Packets sent at the very end of the window still count if they arrive
/// within this long.
const TAIL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Any server that speaks LiveKit's client protocol (Salon, LiveKit).
    Livekit,
    /// Janus's VideoRoom plugin over its WebSocket transport.
    Janus,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadTestArgs {
    /// Server URL: ws://host:7880 for LiveKit-protocol servers, ws://host:8188 for Janus.
    #[arg(long, default_value = "ws://127.0.0.1:7880")]
    pub url: String,
    #[arg(long, value_enum, default_value = "livekit")]
    pub target: Target,
    #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
    pub api_key: String,
    #[arg(
        long,
        env = "LIVEKIT_API_SECRET",
        default_value = "secret",
        hide_default_value = true,
        hide_env_values = true
    )]
    pub api_secret: String,
    /// A join token instead of key and secret. A token names one identity,
    /// so it serves a single participant.
    #[arg(long)]
    pub token: Option<String>,
    /// Room to load (default: a new random name).
    #[arg(long)]
    pub room: Option<String>,
    /// Participants that publish a camera track (VP8).
    #[arg(long, default_value_t = 1)]
    pub video_publishers: usize,
    /// Participants that publish a microphone track (Opus); the first ones
    /// are the video publishers, as in `lk load-test`.
    #[arg(long, default_value_t = 0)]
    pub audio_publishers: usize,
    /// Participants that only subscribe, to every published track.
    #[arg(long, default_value_t = 1)]
    pub subscribers: usize,
    /// Publishers subscribe to everyone else too: a meeting.
    #[arg(long)]
    pub publishers_subscribe: bool,
    /// Length of the measurement window, once everyone is in (e.g. 10s, 2m).
    #[arg(long, default_value = "10s", value_parser = salon_common::parse_duration)]
    pub duration: Duration,
    /// Send three simulcast layers up to --video-resolution (the default).
    #[arg(long, overrides_with = "no_simulcast")]
    pub simulcast: bool,
    /// Send one layer at --video-resolution.
    #[arg(long, overrides_with = "simulcast")]
    pub no_simulcast: bool,
    #[arg(long, value_enum, default_value = "high")]
    pub video_resolution: Quality,
    /// Participants joining per second.
    #[arg(long, default_value_t = 5.0)]
    pub join_rate: f64,
    /// Camera packets leave at this multiple of the layers' bitrate, in
    /// 5 ms bursts, as libwebrtc's pacer sends them (its default factor).
    /// 0 sends each frame as one burst.
    #[arg(long, default_value_t = 2.5)]
    pub pacing_factor: f64,
    /// PID of the server when it runs on this machine: its CPU time and
    /// memory are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// The server's Prometheus endpoint (a Salon node's, e.g.
    /// http://127.0.0.1:6789/metrics): its forwarding-delay histogram over
    /// the window is reported beside the end-to-end latency.
    #[arg(long)]
    pub server_metrics: Option<String>,
    /// Address the participants' media sockets bind to. Keep it on this
    /// machine: loopback, or an address in a network namespace of your own
    /// (Janus never gathers on loopback; benches/compare-janus.sh makes one).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_ip: std::net::IpAddr,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long)]
    pub json: bool,
}

impl LoadTestArgs {
    fn simulcast(&self) -> bool {
        !self.no_simulcast
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadTestError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Media(#[from] media::MediaError),
    #[error(transparent)]
    Proc(#[from] procstat::ProcError),
    #[error(transparent)]
    Scrape(#[from] scrape::ScrapeError),
    #[error("no participant could join: {0}")]
    NobodyJoined(String),
}

/// How participants get their join tokens.
pub(crate) enum Auth {
    Keys { key: String, secret: String },
    Token(String),
}

impl Auth {
    pub(crate) fn token_for(
        &self,
        room: &str,
        identity: &str,
    ) -> Result<String, livekit::SignalError> {
        match self {
            Auth::Token(t) => Ok(t.clone()),
            Auth::Keys { key, secret } => auth::create_token(
                key,
                secret,
                TokenSpec {
                    identity: identity.to_owned(),
                    name: identity.to_owned(),
                    grant: VideoGrant {
                        room: Some(room.to_owned()),
                        room_join: true,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .map_err(|e| livekit::SignalError::Token(e.to_string())),
        }
    }
}

/// What one synthetic participant does.
#[derive(Debug, Clone)]
pub(crate) struct Participant {
    pub(crate) index: usize,
    pub(crate) identity: String,
    /// Layers of the camera track it publishes, lowest first.
    pub(crate) video: Option<Vec<Quality>>,
    pub(crate) simulcast: bool,
    pub(crate) audio: bool,
    pub(crate) subscribe: bool,
}

/// What every participant of a run shares.
pub(crate) struct RunContext {
    pub(crate) url: String,
    pub(crate) bind_ip: std::net::IpAddr,
    pub(crate) auth: Auth,
    pub(crate) room: String,
    /// How many participants publish: Janus subscribers wait for them all.
    pub(crate) publishers: usize,
    pub(crate) ledger: Shared<Ledger>,
    pub(crate) video: Vec<Arc<VideoClip>>,
    pub(crate) audio: Arc<AudioClip>,
    /// Multiple of a camera's bitrate its packets are paced at; 0 for none.
    pub(crate) pacing_factor: f64,
    pub(crate) stop: watch::Receiver<bool>,
}

/// lk load-test's roster: publishers first (video ones also send audio when
/// --audio-publishers reaches them), then subscribers.
pub(crate) fn roster(args: &LoadTestArgs) -> Vec<Participant> {
    let publishers = args.video_publishers.max(args.audio_publishers);
    let layers = if args.simulcast() {
        args.video_resolution.layers_up_to()
    } else {
        vec![args.video_resolution]
    };
    (0..publishers + args.subscribers)
        .map(|index| {
            let publishes = index < publishers;
            Participant {
                index,
                identity: if publishes {
                    format!("pub-{index}")
                } else {
                    format!("sub-{}", index - publishers)
                },
                video: (index < args.video_publishers).then(|| layers.clone()),
                simulcast: args.simulcast(),
                audio: index < args.audio_publishers,
                subscribe: !publishes || args.publishers_subscribe,
            }
        })
        .collect()
}

fn validate(args: &LoadTestArgs, roster: &[Participant]) -> Result<(), LoadTestError> {
    let usage = |m: &str| Err(LoadTestError::Usage(m.to_owned()));
    if roster.is_empty() {
        return usage(
            "nobody to run: give --video-publishers, --audio-publishers or --subscribers",
        );
    }
    if args.token.is_some() && roster.len() > 1 {
        return usage(
            "--token names one identity and serves one participant; use --api-key and --api-secret for more",
        );
    }
    if args.duration.is_zero() || args.duration > MAX_DURATION {
        return usage("--duration must be between 1s and 1h");
    }
    if !(args.join_rate > 0.0 && args.join_rate <= 100.0) {
        return usage("--join-rate must be above 0 and at most 100 per second");
    }
    // Under 1 the pacer would send less than the camera makes, and the
    // queue would grow for the whole run.
    if !(args.pacing_factor == 0.0 || (1.0..=100.0).contains(&args.pacing_factor)) {
        return usage("--pacing-factor must be 0 (no pacing) or between 1 and 100");
    }
    if !(args.url.starts_with("ws://") || args.url.starts_with("wss://")) {
        return usage("--url must be a ws:// or wss:// URL");
    }
    Ok(())
}

/// The server's delay histogram at one end of the window. A failed read
/// there costs the delay figures, not the run's other figures.
async fn window_scrape(url: &str) -> Option<scrape::Buckets> {
    match scrape::forward_delay(url).await {
        Ok(buckets) => Some(buckets),
        Err(err) => {
            eprintln!("no server delay figures: {err}");
            None
        }
    }
}

/// Runs a load test to the end and returns its report. Progress goes to
/// stderr once a second.
pub async fn run(args: LoadTestArgs) -> Result<Report, LoadTestError> {
    let roster = roster(&args);
    validate(&args, &roster)?;
    let room = args
        .room
        .clone()
        .unwrap_or_else(|| format!("load-{:06}", rand::random::<u32>() % 1_000_000));
    let server = args.server_pid.map(|p| p.to_string());
    let baseline = server.as_deref().map(procstat::sample).transpose()?;
    // Read once before anyone joins, so that a wrong URL fails at once.
    if let Some(url) = &args.server_metrics {
        scrape::forward_delay(url).await?;
    }
    let me = std::process::id().to_string();

    let (stop_tx, stop) = watch::channel(false);
    let ledger: Shared<Ledger> = Arc::new(Mutex::new(Ledger::default()));
    let ctx = Arc::new(RunContext {
        url: args.url.clone(),
        bind_ip: args.bind_ip,
        auth: match &args.token {
            Some(t) => Auth::Token(t.clone()),
            None => Auth::Keys {
                key: args.api_key.clone(),
                secret: args.api_secret.clone(),
            },
        },
        room: room.clone(),
        publishers: roster
            .iter()
            .filter(|p| p.video.is_some() || p.audio)
            .count(),
        ledger: ledger.clone(),
        video: [Quality::Low, Quality::Medium, Quality::High]
            .into_iter()
            .map(|q| VideoClip::load(q).map(Arc::new))
            .collect::<Result<_, _>>()?,
        audio: Arc::new(AudioClip::load()?),
        pacing_factor: args.pacing_factor,
        stop,
    });
    let progress = Progress::new(server.clone());

    // Join at the requested pace.
    let started = Instant::now();
    let pace = Duration::from_secs_f64(1.0 / args.join_rate);
    let mut joins = Vec::with_capacity(roster.len());
    let mut tasks = Vec::with_capacity(roster.len());
    for who in &roster {
        let (tx, rx) = oneshot::channel();
        let ctx = ctx.clone();
        let who2 = who.clone();
        let target = args.target;
        tasks.push(tokio::spawn(async move {
            match target {
                Target::Livekit => livekit::run(who2, ctx, tx).await.map_err(|e| e.to_string()),
                Target::Janus => janus::run(who2, ctx, tx).await.map_err(|e| e.to_string()),
            }
        }));
        joins.push(rx);
        progress.line(
            &format!("joining {}/{}", joins.len(), roster.len()),
            &ledger,
        );
        tokio::time::sleep(pace).await;
    }
    let join_deadline = started + SETTLE_TIMEOUT + pace * roster.len() as u32;
    let mut join_times = Vec::new();
    for rx in joins {
        if let Ok(Ok(took)) = tokio::time::timeout_at(join_deadline.into(), rx).await {
            join_times.push(took);
        }
    }
    if join_times.is_empty() {
        let _ = stop_tx.send(true);
        let mut reasons = Vec::new();
        for task in tasks {
            if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(2), task).await {
                reasons.push(e);
            }
        }
        return Err(LoadTestError::NobodyJoined(
            reasons
                .first()
                .cloned()
                .unwrap_or_else(|| "timed out".to_owned()),
        ));
    }

    // Let every subscriber see every stream (and its first keyframe) first.
    let subscribers: Vec<usize> = roster
        .iter()
        .filter(|p| p.subscribe)
        .map(|p| p.index)
        .collect();
    let settle_deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < settle_deadline && !lock(&ledger).everyone_sees_everything(&subscribers)
    {
        progress.line("waiting for media", &ledger);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    // The measurement window.
    let cpu_start = server.as_deref().map(procstat::sample).transpose()?;
    let self_start = procstat::sample(&me)?;
    // Unreadable (no /proc/net): the report says nothing of the kernel.
    let drops_start = netstat::kernel_drops().ok();
    let delay_start = match &args.server_metrics {
        Some(url) => window_scrape(url).await,
        None => None,
    };
    let window_start = Instant::now();
    lock(&ledger).start_window(window_start);
    while window_start.elapsed() < args.duration {
        let left = args.duration.saturating_sub(window_start.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(1))).await;
        progress.line(
            &format!(
                "{:>3.0}s/{}s",
                window_start.elapsed().as_secs_f64(),
                args.duration.as_secs()
            ),
            &ledger,
        );
    }
    let window_end = Instant::now();
    lock(&ledger).end_window(window_end);
    let cpu_end = server.as_deref().map(procstat::sample).transpose()?;
    let self_end = procstat::sample(&me)?;
    let kernel_drops = drops_start
        .zip(netstat::kernel_drops().ok())
        .map(|(start, end)| end.since(&start));
    // Workers flush their delays once a second: wait for the window's last.
    let delay_end = match &args.server_metrics {
        Some(url) => {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            window_scrape(url).await
        }
        None => None,
    };
    tokio::time::sleep(TAIL).await;
    progress.done();

    let _ = stop_tx.send(true);
    let mut failures = Vec::new();
    // One deadline for all: a run of hundreds must not wait 5 s for each.
    let leave_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (who, task) in roster.iter().zip(tasks) {
        match tokio::time::timeout_at(leave_deadline, task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failures.push(format!("{}: {e}", who.identity)),
            Ok(Err(e)) => failures.push(format!("{}: {e}", who.identity)),
            Err(_) => failures.push(format!("{}: did not leave in time", who.identity)),
        }
    }

    let figures = lock(&ledger).figures(&subscribers);
    let wall = window_end.duration_since(window_start);
    let server_figures = match (baseline, cpu_start, cpu_end) {
        (Some(base), Some(a), Some(b)) => Some(ServerFigures::new(
            base,
            a,
            b,
            wall,
            figures.packets_received,
            subscribers.len(),
        )),
        _ => None,
    };
    Ok(Report {
        params: Params {
            target: args.target,
            url: args.url.clone(),
            room,
            video_publishers: args.video_publishers,
            audio_publishers: args.audio_publishers,
            subscribers: args.subscribers,
            publishers_subscribe: args.publishers_subscribe,
            simulcast: args.simulcast(),
            video_resolution: args.video_resolution,
            pacing_factor: args.pacing_factor,
            duration_s: args.duration.as_secs_f64(),
        },
        participants: roster.len(),
        joined: join_times.len(),
        failures,
        join: JoinFigures::new(join_times),
        figures,
        server: server_figures,
        server_delay: delay_start
            .zip(delay_end)
            .map(|(a, b)| DelayFigures::new(&b.since(&a))),
        generator_cpu_percent: 100.0 * self_end.cpu.saturating_sub(self_start.cpu).as_secs_f64()
            / wall.as_secs_f64().max(1e-9),
        kernel_drops,
    })
}

/// The live progress line: one line per second on stderr, redrawn in place
/// on a terminal.
struct Progress {
    server: Option<String>,
    tty: bool,
    last: Mutex<(Instant, u64, u64, Option<Duration>)>,
}

impl Progress {
    fn new(server: Option<String>) -> Self {
        let cpu = server
            .as_deref()
            .and_then(|p| procstat::sample(p).ok())
            .map(|s| s.cpu);
        Self {
            server,
            tty: std::io::stderr().is_terminal(),
            last: Mutex::new((Instant::now(), 0, 0, cpu)),
        }
    }

    fn line(&self, phase: &str, ledger: &Shared<Ledger>) {
        let (packets, bytes) = {
            let l = lock(ledger);
            (l.received_packets, l.received_bytes)
        };
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let secs = now.duration_since(last.0).as_secs_f64();
        if secs < 0.5 {
            return;
        }
        let cpu = self
            .server
            .as_deref()
            .and_then(|p| procstat::sample(p).ok())
            .map(|s| s.cpu);
        let server = match (cpu, last.3) {
            (Some(now_cpu), Some(before)) => format!(
                "  server CPU {:>5.1}%",
                100.0 * now_cpu.saturating_sub(before).as_secs_f64() / secs
            ),
            _ => String::new(),
        };
        let text = format!(
            "{phase:<18} received {:>7.0} pkt/s {:>7.2} Mb/s{server}",
            packets.saturating_sub(last.1) as f64 / secs,
            bytes.saturating_sub(last.2) as f64 * 8.0 / secs / 1e6,
        );
        *last = (now, packets, bytes, cpu);
        if self.tty {
            eprint!("\r{text}\x1b[K");
        } else {
            eprintln!("{text}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
