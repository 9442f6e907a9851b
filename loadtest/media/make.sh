#!/usr/bin/env bash
# Makes the load generator's synthetic media with Debian's ffmpeg (libvpx,
# libopus): a two-second VP8 clip per simulcast layer, keyframe first, at
# about the bitrates livekit-client sends per layer, and two seconds of Opus
# in 20 ms packets, one per Ogg page. The noise keeps the encoder at its
# target rate; a plain test pattern would compress to a fraction of it.
# The outputs are committed; rerun only to change them.
set -euo pipefail
cd "$(dirname "$0")"
command -v ffmpeg >/dev/null || { echo "apt-get install ffmpeg" >&2; exit 1; }
for spec in "high 1280x720 1700k" "medium 640x360 500k" "low 320x180 150k"; do
  set -- $spec
  ffmpeg -loglevel error -y -f lavfi -i "testsrc2=size=$2:rate=30,noise=alls=12:allf=t:all_seed=7" \
    -t 2 -c:v libvpx -deadline realtime -cpu-used 8 -lag-in-frames 0 -auto-alt-ref 0 \
    -g 60 -keyint_min 60 -b:v "$3" -minrate "$3" -maxrate "$3" -bufsize "$3" "$1.ivf"
done
# A tone that glides, so that no two 20 ms packets are alike.
ffmpeg -loglevel error -y -f lavfi -i "aevalsrc=0.3*sin(2*PI*(300+100*sin(2*PI*t))*t):s=48000" \
  -t 2 -c:a libopus -b:a 32k -frame_duration 20 -application voip -page_duration 20000 audio.ogg
ls -l ./*.ivf ./*.ogg
