use super::*;

const PACKET: Duration = Duration::from_millis(20);

/// Feeds `n` packets 20 ms apart from `t`; levels cycle through `levels`.
/// Returns the window sums and the time after the last packet.
fn feed(w: &mut LevelWindow, t: Instant, n: u32, levels: &[u8]) -> (Vec<WindowSum>, Instant) {
    let mut sums = Vec::new();
    for i in 0..n {
        let level = levels[i as usize % levels.len()];
        sums.extend(w.observe(t + PACKET * i, level));
    }
    (sums, t + PACKET * n)
}

fn sid(s: &str) -> ParticipantSid {
    ParticipantSid::new(s)
}

#[test]
fn a_window_sums_the_share_and_loudness_of_voice() {
    let t0 = Instant::now();
    let mut w = LevelWindow::default();
    // 25 packets fill a window; the 26th closes it. Loud (-6 dBov) one packet in two.
    let (sums, _) = feed(&mut w, t0, 26, &[6, 127]);
    assert_eq!(sums.len(), 1);
    assert!((sums[0].active_share - 13.0 / 25.0).abs() < 1e-6);
    assert!((sums[0].level - 10f32.powf(-6.0 / 20.0)).abs() < 1e-4);
    // Silence sums to nothing.
    let mut w = LevelWindow::default();
    let (sums, _) = feed(&mut w, t0, 26, &[127]);
    assert_eq!(sums[0].active_share, 0.0);
    assert_eq!(sums[0].level, 0.0);
}

#[test]
fn speech_starts_changes_level_and_stops_with_one_update_each() {
    let t0 = Instant::now();
    let mut s = Speakers::default();
    let loud = WindowSum {
        active_share: 0.9,
        level: 0.5,
    };
    s.report(t0, &sid("PA_a"), loud);
    let changes = s.poll_changes(t0).expect("a speaker started");
    assert_eq!(changes.len(), 1);
    assert!(changes[0].active && changes[0].sid == "PA_a" && changes[0].level == 0.5);
    // The same again, or nearly: nothing to say.
    s.report(
        t0 + WINDOW,
        &sid("PA_a"),
        WindowSum {
            level: 0.52,
            ..loud
        },
    );
    assert_eq!(s.poll_changes(t0 + WINDOW), None);
    // Louder: an update.
    s.report(
        t0 + WINDOW * 2,
        &sid("PA_a"),
        WindowSum { level: 0.9, ..loud },
    );
    assert_eq!(
        s.poll_changes(t0 + WINDOW * 2).map(|c| c[0].level),
        Some(0.9)
    );
    // A cough is not speech: she stopped.
    s.report(
        t0 + WINDOW * 3,
        &sid("PA_a"),
        WindowSum {
            active_share: 0.1,
            level: 0.9,
        },
    );
    let changes = s.poll_changes(t0 + WINDOW * 3).expect("she stopped");
    assert_eq!(changes.len(), 1);
    assert!(!changes[0].active && changes[0].level == 0.0);
    assert_eq!(s.poll_changes(t0 + WINDOW * 4), None);
}

#[test]
fn a_speaker_whose_reports_stop_falls_silent() {
    let t0 = Instant::now();
    let mut s = Speakers::default();
    let loud = WindowSum {
        active_share: 1.0,
        level: 0.7,
    };
    s.report(t0, &sid("PA_a"), loud);
    s.report(t0, &sid("PA_b"), loud);
    assert_eq!(s.poll_changes(t0).map(|c| c.len()), Some(2));
    // Bob goes on, Ann's packets stop (DTX, or she unpublished).
    let later = t0 + SILENCE_AFTER;
    s.report(later, &sid("PA_b"), loud);
    assert_eq!(s.poll_timeout(), Some(later));
    let changes = s.poll_changes(later).expect("ann fell silent");
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].sid.as_str(), changes[0].active),
        ("PA_a", false)
    );
    // Bob leaves.
    s.remove(&sid("PA_b"));
    let changes = s.poll_changes(later).expect("bob left");
    assert_eq!(
        (changes[0].sid.as_str(), changes[0].active),
        ("PA_b", false)
    );
    assert_eq!(s.poll_timeout(), None);
}
