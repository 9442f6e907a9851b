//! `salon`: one binary, one subcommand per role.

mod fleet;

use clap::{Parser, Subcommand};
use salon_signaling::auth::{self, KeyStore, TokenSpec, VideoGrant};
use std::collections::HashMap;
use std::future::Future;
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
    Dev(fleet::DevArgs),
    /// A signaling replica of a fleet: the HTTP API, the signal endpoint
    /// (relayed to the node hosting each room) and the web app.
    Signaling(fleet::SignalingArgs),
    /// A media node of a fleet: registers in Redis and hosts the rooms
    /// placed on it. SIGTERM drains it; a second signal stops it at once.
    Sfu(fleet::SfuArgs),
    /// Load a server with real WebRTC participants and measure it.
    LoadTest(Box<salon_loadtest::LoadTestArgs>),
    /// Token tools.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(clap::Args)]
pub(crate) struct KeyArgs {
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
pub(crate) fn load_keys(args: &KeyArgs) -> Result<HashMap<String, String>, String> {
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
        Command::Dev(args) => serve("salon dev", fleet::dev(args)),
        Command::Signaling(args) => serve("salon signaling", fleet::signaling(args)),
        Command::Sfu(args) => serve("salon sfu", fleet::sfu(args)),
    }
}

/// Runs a server role to its end on a multi-threaded runtime.
fn serve(role: &str, server: impl Future<Output = Result<(), String>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{role}: {e}");
            ExitCode::FAILURE
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
