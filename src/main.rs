//! `salon`: one binary, one subcommand per role.

use clap::{Parser, Subcommand};
use salon_sfu::{Node, NodeConfig};
use salon_signaling::auth::{self, KeyStore, TokenSpec, VideoGrant};
use salon_signaling::{SignalingConfig, app};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "salon",
    version,
    about = "A LiveKit-compatible video-conferencing server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything in one process on this machine: signaling, one SFU node,
    /// in-memory state, the web app, dev key `devkey`/`secret`, bound to 127.0.0.1.
    Dev(DevArgs),
    /// Load a server with real WebRTC participants and measure it.
    LoadTest(Box<salon_loadtest::LoadTestArgs>),
    /// Token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(clap::Args)]
struct DevArgs {
    /// HTTP/WebSocket port (LiveKit's default is 7880).
    #[arg(long, default_value_t = 7880)]
    port: u16,
    /// Directory of the built web app.
    #[arg(long, default_value = "web/dist")]
    web_dir: PathBuf,
    /// Turn off the open guest mode in which anyone who opens the page can
    /// get a join token for any room.
    #[arg(long)]
    no_guest_tokens: bool,
    /// UDP port of the first media worker (the others use the next ports);
    /// 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    rtc_port: u16,
    /// Media worker threads, each with one UDP port; 0 means one per core.
    #[arg(long, default_value_t = 0)]
    media_workers: usize,
    #[command(flatten)]
    keys: KeyArgs,
}

#[derive(clap::Args)]
struct KeyArgs {
    /// API keys as `key: secret` pairs, comma- or newline-separated (LiveKit's format).
    #[arg(long, env = "LIVEKIT_KEYS", hide_env_values = true)]
    keys: Option<String>,
    /// A file of `key: secret` lines.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a join token.
    Create {
        #[arg(long)]
        room: String,
        #[arg(long)]
        identity: String,
        #[arg(long)]
        name: Option<String>,
        /// Also grant roomAdmin, roomCreate and roomList.
        #[arg(long)]
        admin: bool,
        /// Lifetime, e.g. `6h`, `30m`, `90s`.
        #[arg(long, default_value = "6h", value_parser = salon_common::parse_duration)]
        valid_for: Duration,
        #[arg(long, env = "LIVEKIT_API_KEY", default_value = "devkey")]
        api_key: String,
        #[arg(
            long,
            env = "LIVEKIT_API_SECRET",
            default_value = "secret",
            hide_default_value = true,
            hide_env_values = true
        )]
        api_secret: String,
    },
}

/// Keys from flags, env and key file; `devkey: secret` when none are given
/// (dev mode only).
fn load_keys(args: &KeyArgs) -> Result<HashMap<String, String>, String> {
    let mut keys = HashMap::new();
    if let Some(text) = &args.keys {
        keys.extend(KeyStore::parse(text)?);
    }
    if let Some(path) = &args.key_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        keys.extend(KeyStore::parse(&text)?);
    }
    Ok(keys)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,salon=info,salon_sfu=info,salon_signaling=info,rtc=error,rtc_ice=error,rtc_dtls=error,rtc_sctp=error,rtc_srtp=error,rtc_interceptor=error,webrtc=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Token { command } => token(command),
        Command::LoadTest(args) => load_test(*args),
        Command::Dev(args) => {
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(dev(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("salon dev: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_test(args: salon_loadtest::LoadTestArgs) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = args.json;
    match runtime.block_on(salon_loadtest::run(args)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(text) => println!("{text}"),
                    Err(e) => eprintln!("cannot encode the report: {e}"),
                }
            } else {
                print!("{}", report.table());
            }
            if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("salon load-test: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(command: TokenCommand) -> ExitCode {
    let TokenCommand::Create {
        room,
        identity,
        name,
        admin,
        valid_for,
        api_key,
        api_secret,
    } = command;
    let spec = TokenSpec {
        identity,
        name: name.unwrap_or_default(),
        grant: VideoGrant {
            room: Some(room),
            room_join: true,
            room_admin: admin,
            room_create: admin,
            room_list: admin,
            ..Default::default()
        },
        ttl: Some(valid_for),
        ..Default::default()
    };
    match auth::create_token(&api_key, &api_secret, spec) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot create token: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dev(args: DevArgs) -> Result<(), String> {
    // Dev mode never listens beyond this machine.
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut keys = load_keys(&args.keys)?;
    if keys.is_empty() {
        keys.insert("devkey".to_owned(), "secret".to_owned());
    }
    let guest_key = if args.no_guest_tokens {
        None
    } else {
        let mut names: Vec<&String> = keys.keys().collect();
        names.sort();
        names.first().map(|k| (*k).clone())
    };
    let web_dir = if args.web_dir.join("index.html").is_file() {
        Some(args.web_dir.clone())
    } else {
        tracing::warn!(dir = %args.web_dir.display(), "web app not built; run `npm --prefix web run build` to serve it");
        None
    };
    let node = Node::start(NodeConfig {
        rtc_bind_ip: ip,
        rtc_port: args.rtc_port,
        media_workers: args.media_workers,
    })
    .map_err(|e| e.to_string())?;
    let router = app(
        SignalingConfig {
            keys: KeyStore::new(keys),
            guest_key,
            web_dir,
        },
        node,
    );
    let addr = SocketAddr::new(ip, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    println!("Salon is running. Open http://{bound}/ in your browser.");
    println!("LiveKit URL: ws://{bound}  API key: devkey  API secret: secret");
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| e.to_string())
}
