use super::*;
use lk::signal_response::Message as Msg;

fn grants() -> Grants {
    Grants {
        can_publish: true,
        can_subscribe: true,
        can_publish_data: true,
        can_update_metadata: false,
        hidden: false,
    }
}

fn join_req(sid: &str, identity: &str) -> JoinRequest {
    JoinRequest {
        sid: ParticipantSid::new(sid),
        identity: ParticipantIdentity::new(identity),
        name: identity.to_uppercase(),
        metadata: String::new(),
        attributes: HashMap::new(),
        grants: grants(),
        auto_subscribe: true,
        client_protocol: 0,
        joined_at_ms: 1_700_000_000_000,
    }
}

fn join(room: &mut Room, now: Instant, sid: &str, identity: &str) {
    room.handle_input(now, RoomInput::Join(join_req(sid, identity)))
        .expect("join");
}

fn drain(room: &mut Room) -> Vec<RoomOutput> {
    std::iter::from_fn(|| room.poll_output()).collect()
}

fn new_room(now: Instant) -> Room {
    Room::new(
        RoomName::new("r"),
        RoomConfig::default(),
        1_700_000_000_000,
        now,
    )
}

fn sid(s: &str) -> ParticipantSid {
    ParticipantSid::new(s)
}

fn publish(room: &mut Room, now: Instant, who: &str, cid: &str, kind: lk::TrackType) -> TrackSid {
    let request = lk::AddTrackRequest {
        cid: cid.to_owned(),
        r#type: kind as i32,
        name: cid.to_owned(),
        ..Default::default()
    };
    publish_request(room, now, who, request)
}

/// Announces a track with AddTrack, then lets its media arrive.
fn publish_request(
    room: &mut Room,
    now: Instant,
    who: &str,
    request: lk::AddTrackRequest,
) -> TrackSid {
    let cid = request.cid.clone();
    room.handle_input(
        now,
        RoomInput::AddTrack {
            sid: sid(who),
            request,
        },
    )
    .expect("add track");
    let track = drain(room)
        .into_iter()
        .find_map(|o| match o {
            RoomOutput::Signal {
                message: Msg::TrackPublished(p),
                ..
            } => p.track,
            _ => None,
        })
        .expect("TrackPublished");
    room.handle_input(
        now,
        RoomInput::MediaArrived {
            sid: sid(who),
            cid,
            mime_type: "video/VP8".to_owned(),
            mid: String::new(),
        },
    )
    .expect("media");
    TrackSid::new(track.sid)
}

#[test]
fn the_first_joiner_gets_a_join_response_describing_the_room() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    let out = drain(&mut room);
    let Some(RoomOutput::Signal {
        to,
        message: Msg::Join(join),
    }) = out.first()
    else {
        panic!("expected a join response first, got {out:?}");
    };
    assert_eq!(to, &sid("PA_a"));
    assert_eq!(join.room.as_ref().map(|r| r.name.as_str()), Some("r"));
    assert_eq!(
        join.participant.as_ref().map(|p| p.identity.as_str()),
        Some("alice")
    );
    assert!(join.other_participants.is_empty());
    assert!(!join.subscriber_primary);
}

#[test]
fn a_published_track_is_announced_then_subscribed_by_others() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    join(&mut room, now, "PA_b", "bob");
    let out = drain(&mut room);
    // Alice hears of Bob.
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Signal { to, message: Msg::Update(u) }
        if to == &sid("PA_a") && u.participants[0].identity == "bob")
    ));

    room.handle_input(
        now,
        RoomInput::AddTrack {
            sid: sid("PA_a"),
            request: lk::AddTrackRequest {
                cid: "cam".to_owned(),
                r#type: lk::TrackType::Video as i32,
                ..Default::default()
            },
        },
    )
    .expect("add");
    let out = drain(&mut room);
    assert!(
        !out.iter()
            .any(|o| matches!(o, RoomOutput::Subscribe { .. })),
        "nobody subscribes before media arrives"
    );
    room.handle_input(
        now,
        RoomInput::MediaArrived {
            sid: sid("PA_a"),
            cid: "cam".to_owned(),
            mime_type: "video/VP8".to_owned(),
            mid: String::new(),
        },
    )
    .expect("media");
    let out = drain(&mut room);
    let update_pos = out
        .iter()
        .position(|o| {
            matches!(o, RoomOutput::Signal { to, message: Msg::Update(u) }
            if to == &sid("PA_b") && u.participants[0].tracks.len() == 1)
        })
        .expect("bob learns of alice's track");
    let subscribe_pos = out
        .iter()
        .position(
            |o| matches!(o, RoomOutput::Subscribe { subscriber, .. } if subscriber == &sid("PA_b")),
        )
        .expect("bob subscribes");
    assert!(
        update_pos < subscribe_pos,
        "the client must know the track before it arrives"
    );
    assert!(
        out.iter()
            .any(|o| matches!(o, RoomOutput::TrackReady { cid, .. } if cid == "cam"))
    );
    assert!(
        !out.iter().any(
            |o| matches!(o, RoomOutput::Subscribe { subscriber, .. } if subscriber == &sid("PA_a"))
        ),
        "nobody subscribes to their own track"
    );
}

#[test]
fn a_late_joiner_subscribes_to_what_is_already_published() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    drain(&mut room);
    let track = publish(&mut room, now, "PA_a", "cam", lk::TrackType::Video);
    drain(&mut room);
    join(&mut room, now, "PA_c", "carol");
    let out = drain(&mut room);
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Subscribe { subscriber, track: t, .. }
        if subscriber == &sid("PA_c") && t.sid == track.as_str())
    ));
}

#[test]
fn a_participant_without_publish_grant_cannot_add_tracks() {
    let now = Instant::now();
    let mut room = new_room(now);
    let mut req = join_req("PA_v", "viewer");
    req.grants.can_publish = false;
    room.handle_input(now, RoomInput::Join(req)).expect("join");
    drain(&mut room);
    let err = room.handle_input(
        now,
        RoomInput::AddTrack {
            sid: sid("PA_v"),
            request: lk::AddTrackRequest {
                cid: "cam".to_owned(),
                ..Default::default()
            },
        },
    );
    assert_eq!(err, Err(RoomError::NotAllowed("publish")));
    assert!(drain(&mut room).is_empty());
}

#[test]
fn media_for_a_track_never_announced_is_refused() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    drain(&mut room);
    let err = room.handle_input(
        now,
        RoomInput::MediaArrived {
            sid: sid("PA_a"),
            cid: "sneaky".to_owned(),
            mime_type: "video/VP8".to_owned(),
            mid: String::new(),
        },
    );
    assert_eq!(err, Err(RoomError::TrackNotFound));
}

#[test]
fn leaving_unsubscribes_others_and_tells_them() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    join(&mut room, now, "PA_b", "bob");
    let track = publish(&mut room, now, "PA_a", "cam", lk::TrackType::Video);
    drain(&mut room);
    room.handle_input(now, RoomInput::Leave { sid: sid("PA_a") })
        .expect("leave");
    let out = drain(&mut room);
    assert!(out.contains(&RoomOutput::Unsubscribe {
        subscriber: sid("PA_b"),
        track: track.clone()
    }));
    assert!(out.contains(&RoomOutput::TrackGone { track }));
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Signal { to, message: Msg::Update(u) }
        if to == &sid("PA_b")
            && u.participants[0].state == lk::participant_info::State::Disconnected as i32)
    ));
    assert_eq!(room.participants().len(), 1);
}

#[test]
fn an_empty_room_closes_after_its_empty_timeout() {
    let t0 = Instant::now();
    let config = RoomConfig {
        empty_timeout: Duration::from_secs(300),
        ..RoomConfig::default()
    };
    let mut room = Room::new(RoomName::new("r"), config, 0, t0);
    room.handle_input(t0, RoomInput::Join(join_req("PA_a", "alice")))
        .expect("join");
    assert_eq!(
        room.poll_timeout(),
        None,
        "an occupied room never times out"
    );
    let t1 = t0 + Duration::from_secs(10);
    room.handle_input(t1, RoomInput::Leave { sid: sid("PA_a") })
        .expect("leave");
    drain(&mut room);
    assert_eq!(room.poll_timeout(), Some(t1 + Duration::from_secs(300)));
    room.handle_timeout(t1 + Duration::from_secs(299));
    assert!(!room.is_closed());
    room.handle_timeout(t1 + Duration::from_secs(300));
    assert!(room.is_closed());
    assert_eq!(drain(&mut room), vec![RoomOutput::Closed]);
}

#[test]
fn a_second_session_with_the_same_identity_replaces_the_first() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_1", "alice");
    drain(&mut room);
    join(&mut room, now, "PA_2", "alice");
    let out = drain(&mut room);
    assert!(out.contains(&RoomOutput::Disconnect {
        sid: sid("PA_1"),
        reason: lk::DisconnectReason::DuplicateIdentity
    }));
    let ps = room.participants();
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].sid, "PA_2");
}

#[test]
fn a_full_room_refuses_more_participants() {
    let now = Instant::now();
    let config = RoomConfig {
        max_participants: 1,
        ..RoomConfig::default()
    };
    let mut room = Room::new(RoomName::new("r"), config, 0, now);
    join(&mut room, now, "PA_a", "alice");
    assert_eq!(
        room.handle_input(now, RoomInput::Join(join_req("PA_b", "bob"))),
        Err(RoomError::RoomFull)
    );
}

#[test]
fn admin_mute_tells_the_publisher_and_everyone_else() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    join(&mut room, now, "PA_b", "bob");
    let track = publish(&mut room, now, "PA_a", "mic", lk::TrackType::Audio);
    drain(&mut room);
    room.handle_input(
        now,
        RoomInput::AdminMute {
            identity: ParticipantIdentity::new("alice"),
            track: track.clone(),
            muted: true,
        },
    )
    .expect("mute");
    let out = drain(&mut room);
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Signal { to, message: Msg::Mute(m) }
        if to == &sid("PA_a") && m.muted && m.sid == track.as_str())
    ));
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Signal { to, message: Msg::Update(u) }
        if to == &sid("PA_b") && u.participants[0].tracks[0].muted)
    ));
    assert_eq!(room.track(&track).map(|t| t.muted), Some(true));
}

#[test]
fn metadata_updates_need_the_grant_and_respect_limits() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    drain(&mut room);
    let update = |metadata: String| RoomInput::UpdateMetadata {
        sid: sid("PA_a"),
        update: lk::UpdateParticipantMetadata {
            metadata,
            ..Default::default()
        },
    };
    assert_eq!(
        room.handle_input(now, update("x".to_owned())),
        Err(RoomError::NotAllowed("update metadata"))
    );
    room.handle_input(
        now,
        RoomInput::AdminUpdate {
            identity: ParticipantIdentity::new("alice"),
            name: String::new(),
            metadata: "y".repeat(salon_common::MAX_METADATA_BYTES + 1),
            attributes: HashMap::new(),
            permission: None,
        },
    )
    .expect_err("oversized metadata is refused");
}

#[test]
fn hidden_participants_are_not_announced() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    drain(&mut room);
    let mut rec = join_req("PA_r", "recorder");
    rec.grants.hidden = true;
    room.handle_input(now, RoomInput::Join(rec)).expect("join");
    let out = drain(&mut room);
    assert!(
        !out.iter()
            .any(|o| matches!(o, RoomOutput::Signal { to, .. } if to == &sid("PA_a")))
    );
    assert_eq!(room.info().num_participants, 1);
}

#[test]
fn delete_room_disconnects_everyone() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    drain(&mut room);
    room.handle_input(now, RoomInput::Close).expect("close");
    let out = drain(&mut room);
    assert!(out.contains(&RoomOutput::Disconnect {
        sid: sid("PA_a"),
        reason: lk::DisconnectReason::RoomDeleted
    }));
    assert_eq!(out.last(), Some(&RoomOutput::Closed));
    assert!(room.is_closed());
}

#[test]
fn a_room_handed_over_to_another_node_asks_everyone_to_rejoin() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    drain(&mut room);
    room.handle_input(now, RoomInput::HandOver)
        .expect("hand over");
    let out = drain(&mut room);
    let rejoin = crate::leave_message(
        lk::DisconnectReason::Migration,
        lk::leave_request::Action::Reconnect,
    );
    assert!(out.contains(&RoomOutput::Signal {
        to: sid("PA_a"),
        message: rejoin
    }));
    assert_eq!(out.last(), Some(&RoomOutput::Closed));
    assert!(room.is_closed());
}

#[test]
fn an_unpublished_track_is_withdrawn_from_its_subscribers() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "alice");
    join(&mut room, now, "PA_b", "bob");
    let track = publish(&mut room, now, "PA_a", "screen", lk::TrackType::Video);
    drain(&mut room);
    room.handle_input(
        now,
        RoomInput::Unpublish {
            sid: sid("PA_a"),
            cid: "screen".to_owned(),
        },
    )
    .expect("unpublish");
    let out = drain(&mut room);
    assert!(out.contains(&RoomOutput::Unsubscribe {
        subscriber: sid("PA_b"),
        track: track.clone()
    }));
    assert!(out.contains(&RoomOutput::TrackGone {
        track: track.clone()
    }));
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Signal { to, message: Msg::TrackUnpublished(u) }
        if to == &sid("PA_a") && u.track_sid == track.as_str())
    ));
    assert!(out.iter().any(
        |o| matches!(o, RoomOutput::Signal { to, message: Msg::Update(u) }
        if to == &sid("PA_b") && u.participants[0].tracks.is_empty())
    ));
    assert_eq!(room.track(&track), None);
    // Unpublishing again is an error, not a panic.
    assert_eq!(
        room.handle_input(
            now,
            RoomInput::Unpublish {
                sid: sid("PA_a"),
                cid: "screen".to_owned()
            }
        ),
        Err(RoomError::TrackNotFound)
    );
}

/// Publishes a 720p camera with livekit-client's three simulcast layers.
fn publish_simulcast(room: &mut Room, now: Instant, who: &str) -> TrackSid {
    let layer = |quality: lk::VideoQuality, width, height| lk::VideoLayer {
        quality: quality as i32,
        width,
        height,
        ..Default::default()
    };
    let request = lk::AddTrackRequest {
        cid: "cam".to_owned(),
        r#type: lk::TrackType::Video as i32,
        width: 1280,
        height: 720,
        layers: vec![
            layer(lk::VideoQuality::Low, 320, 180),
            layer(lk::VideoQuality::Medium, 640, 360),
            layer(lk::VideoQuality::High, 1280, 720),
        ],
        ..Default::default()
    };
    publish_request(room, now, who, request)
}

fn settings(
    track: &TrackSid,
    f: impl FnOnce(&mut lk::UpdateTrackSettings),
) -> lk::UpdateTrackSettings {
    let mut s = lk::UpdateTrackSettings {
        track_sids: vec![track.to_string()],
        quality: lk::VideoQuality::High as i32,
        ..Default::default()
    };
    f(&mut s);
    s
}

/// The demands the room passed on to the forwarders.
fn demands(out: &[RoomOutput]) -> Vec<(ParticipantSid, Demand)> {
    out.iter()
        .filter_map(|o| match o {
            RoomOutput::SetDemand {
                subscriber, demand, ..
            } => Some((subscriber.clone(), *demand)),
            _ => None,
        })
        .collect()
}

/// The layers dynacast lets the publisher send, from each update it got.
fn dynacast_updates(out: &[RoomOutput], publisher: &str) -> Vec<Vec<bool>> {
    out.iter()
        .filter_map(|o| match o {
            RoomOutput::Signal {
                to,
                message: Msg::SubscribedQualityUpdate(u),
            } if to == &sid(publisher) => {
                assert_eq!(u.subscribed_codecs.len(), 1);
                assert_eq!(u.subscribed_codecs[0].codec, "vp8");
                Some(
                    u.subscribed_codecs[0]
                        .qualities
                        .iter()
                        .map(|q| q.enabled)
                        .collect(),
                )
            }
            _ => None,
        })
        .collect()
}

#[test]
fn track_settings_become_a_layer_demand_from_quality_or_element_size() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_p", "pat");
    join(&mut room, now, "PA_s", "sam");
    let track = publish_simulcast(&mut room, now, "PA_p");
    drain(&mut room);
    let mut ask = |f: fn(&mut lk::UpdateTrackSettings)| {
        room.handle_input(
            now,
            RoomInput::TrackSettings {
                sid: sid("PA_s"),
                settings: settings(&track, f),
            },
        )
        .expect("settings");
        demands(&drain(&mut room))
    };
    let low = vec![(sid("PA_s"), Demand::UpTo(Rank::LOW))];
    assert_eq!(ask(|s| s.quality = lk::VideoQuality::Low as i32), low);
    // The same again changes nothing.
    assert!(ask(|s| s.quality = lk::VideoQuality::Low as i32).is_empty());
    // Element sizes pick the smallest layer that fills them (10 % slack).
    let medium = vec![(sid("PA_s"), Demand::UpTo(Rank::MEDIUM))];
    assert_eq!(ask(|s| (s.width, s.height) = (600, 338)), medium);
    assert_eq!(ask(|s| (s.width, s.height) = (300, 169)), low);
    let high = vec![(sid("PA_s"), Demand::UpTo(Rank::HIGH))];
    assert_eq!(ask(|s| (s.width, s.height) = (1920, 1080)), high);
    assert_eq!(
        ask(|s| s.disabled = true),
        vec![(sid("PA_s"), Demand::Paused)]
    );
    assert_eq!(
        ask(|s| s.quality = lk::VideoQuality::Off as i32),
        Vec::new()
    );
    assert_eq!(ask(|s| s.quality = lk::VideoQuality::High as i32), high);
    // Nobody may set what another receives, nor settings for a stranger.
    assert!(ask(|s| s.track_sids = vec!["TR_unknown".to_owned()]).is_empty());
    let err = room.handle_input(
        now,
        RoomInput::TrackSettings {
            sid: sid("PA_nobody"),
            settings: settings(&track, |_| {}),
        },
    );
    assert_eq!(err, Err(RoomError::ParticipantNotFound));
}

#[test]
fn dynacast_tells_the_publisher_the_best_layer_anyone_watches() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_p", "pat");
    join(&mut room, now, "PA_a", "ann");
    join(&mut room, now, "PA_b", "ben");
    let track = publish_simulcast(&mut room, now, "PA_p");
    // Two new subscribers at the default: everything on, said once.
    assert_eq!(
        dynacast_updates(&drain(&mut room), "PA_p"),
        vec![vec![true, true, true]]
    );
    let mut set = |who: &str, f: fn(&mut lk::UpdateTrackSettings)| {
        room.handle_input(
            now,
            RoomInput::TrackSettings {
                sid: sid(who),
                settings: settings(&track, f),
            },
        )
        .expect("settings");
        dynacast_updates(&drain(&mut room), "PA_p")
    };
    // Ann wants little, Ben still wants the best: nothing changes.
    assert!(set("PA_a", |s| s.quality = lk::VideoQuality::Low as i32).is_empty());
    // Ben hides the video: only the low layer is needed.
    assert_eq!(
        set("PA_b", |s| s.disabled = true),
        vec![vec![true, false, false]]
    );
    // Ann hides it too: nothing is needed.
    assert_eq!(
        set("PA_a", |s| s.disabled = true),
        vec![vec![false, false, false]]
    );
    assert_eq!(
        set("PA_b", |s| s.quality = lk::VideoQuality::Medium as i32),
        vec![vec![true, true, false]]
    );
    // Ben leaves: nobody watches.
    room.handle_input(now, RoomInput::Leave { sid: sid("PA_b") })
        .expect("leave");
    assert_eq!(
        dynacast_updates(&drain(&mut room), "PA_p"),
        vec![vec![false, false, false]]
    );
}

/// The speaker updates each participant got.
fn speaker_updates(out: &[RoomOutput]) -> Vec<(ParticipantSid, Vec<(String, bool)>)> {
    out.iter()
        .filter_map(|o| match o {
            RoomOutput::Signal {
                to,
                message: Msg::SpeakersChanged(c),
            } => Some((
                to.clone(),
                c.speakers
                    .iter()
                    .map(|s| (s.sid.clone(), s.active))
                    .collect(),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn everyone_hears_who_starts_and_stops_speaking() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "ann");
    join(&mut room, now, "PA_b", "ben");
    drain(&mut room);
    let loud = crate::speakers::WindowSum {
        active_share: 0.8,
        level: 0.6,
    };
    room.handle_input(
        now,
        RoomInput::AudioLevel {
            sid: sid("PA_a"),
            sum: loud,
        },
    )
    .expect("level");
    let started = vec![("PA_a".to_owned(), true)];
    assert_eq!(
        speaker_updates(&drain(&mut room)),
        vec![(sid("PA_a"), started.clone()), (sid("PA_b"), started)]
    );
    // Someone who joins now learns that Ann speaks.
    join(&mut room, now, "PA_c", "cyd");
    assert_eq!(
        speaker_updates(&drain(&mut room)),
        vec![(sid("PA_c"), vec![("PA_a".to_owned(), true)])]
    );
    // Her reports stop: the room wakes up and says she stopped.
    let deadline = room.poll_timeout().expect("a wake-up for the speaker");
    room.handle_timeout(deadline);
    let stopped = vec![("PA_a".to_owned(), false)];
    assert_eq!(
        speaker_updates(&drain(&mut room)),
        vec![
            (sid("PA_a"), stopped.clone()),
            (sid("PA_b"), stopped.clone()),
            (sid("PA_c"), stopped)
        ]
    );
    // Levels of someone not in the room are ignored.
    room.handle_input(
        now,
        RoomInput::AudioLevel {
            sid: sid("PA_x"),
            sum: loud,
        },
    )
    .expect("level");
    assert!(speaker_updates(&drain(&mut room)).is_empty());
}

fn user_data(text: &str, destinations: &[&str]) -> lk::DataPacket {
    lk::DataPacket {
        destination_identities: destinations.iter().map(|d| d.to_string()).collect(),
        value: Some(lk::data_packet::Value::User(lk::UserPacket {
            payload: text.as_bytes().to_vec(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// The data packets the room sent, decoded, by recipient.
fn data_outputs(room: &mut Room) -> Vec<(String, lk::DataPacket)> {
    drain(room)
        .into_iter()
        .filter_map(|o| match o {
            RoomOutput::Data { to, payload, .. } => Some((
                to.to_string(),
                prost::Message::decode(payload).expect("decodes"),
            )),
            _ => None,
        })
        .collect()
}

#[test]
fn data_goes_to_everyone_but_its_sender_named_by_the_room() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "ada");
    join(&mut room, now, "PA_b", "bea");
    join(&mut room, now, "PA_c", "cid");
    drain(&mut room);
    let mut forged = user_data("hi", &[]);
    forged.participant_identity = "bea".to_owned();
    room.handle_input(
        now,
        RoomInput::Data {
            sid: sid("PA_a"),
            kind: lk::data_packet::Kind::Reliable,
            packet: forged,
        },
    )
    .expect("relayed");
    let out = data_outputs(&mut room);
    let to: Vec<&str> = out.iter().map(|(to, _)| to.as_str()).collect();
    assert_eq!(to, ["PA_b", "PA_c"]);
    for (_, packet) in &out {
        assert_eq!(
            packet.participant_identity, "ada",
            "the room names the sender"
        );
        assert_eq!(packet.participant_sid, "PA_a");
    }
}

#[test]
fn data_with_destinations_reaches_only_them() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "ada");
    join(&mut room, now, "PA_b", "bea");
    join(&mut room, now, "PA_c", "cid");
    drain(&mut room);
    room.handle_input(
        now,
        RoomInput::Data {
            sid: sid("PA_a"),
            kind: lk::data_packet::Kind::Lossy,
            packet: user_data("psst", &["cid"]),
        },
    )
    .expect("relayed");
    let out = data_outputs(&mut room);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "PA_c");
}

#[test]
fn data_needs_the_grant_and_skips_those_who_may_not_subscribe() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "ada");
    let mut silent = join_req("PA_s", "silent");
    silent.grants.can_publish_data = false;
    room.handle_input(now, RoomInput::Join(silent))
        .expect("join");
    let mut waiting = join_req("PA_w", "waiting");
    waiting.grants.can_subscribe = false;
    waiting.grants.hidden = true;
    room.handle_input(now, RoomInput::Join(waiting))
        .expect("join");
    drain(&mut room);
    let refused = room.handle_input(
        now,
        RoomInput::Data {
            sid: sid("PA_s"),
            kind: lk::data_packet::Kind::Reliable,
            packet: user_data("no", &[]),
        },
    );
    assert!(matches!(refused, Err(RoomError::NotAllowed(_))));
    assert!(data_outputs(&mut room).is_empty());
    room.handle_input(
        now,
        RoomInput::Data {
            sid: sid("PA_a"),
            kind: lk::data_packet::Kind::Reliable,
            packet: user_data("yes", &[]),
        },
    )
    .expect("relayed");
    let to: Vec<String> = data_outputs(&mut room)
        .into_iter()
        .map(|(to, _)| to)
        .collect();
    assert_eq!(to, ["PA_s"], "the waiting guest gets nothing");
}

#[test]
fn a_client_cannot_send_speaker_updates_or_empty_packets() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "ada");
    join(&mut room, now, "PA_b", "bea");
    drain(&mut room);
    for packet in [
        lk::DataPacket::default(),
        #[allow(deprecated)]
        lk::DataPacket {
            value: Some(lk::data_packet::Value::Speaker(Default::default())),
            ..Default::default()
        },
    ] {
        let result = room.handle_input(
            now,
            RoomInput::Data {
                sid: sid("PA_a"),
                kind: lk::data_packet::Kind::Reliable,
                packet,
            },
        );
        assert!(matches!(result, Err(RoomError::Invalid(_))));
    }
    assert!(data_outputs(&mut room).is_empty());
}

#[test]
fn admitting_a_hidden_guest_shows_them_and_subscribes_them() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_h", "host");
    let track = publish(&mut room, now, "PA_h", "cam", lk::TrackType::Video);
    drain(&mut room);
    let mut guest = join_req("PA_g", "guest");
    guest.grants = Grants {
        can_publish: false,
        can_subscribe: false,
        can_publish_data: false,
        can_update_metadata: false,
        hidden: true,
    };
    room.handle_input(now, RoomInput::Join(guest))
        .expect("join");
    let out = drain(&mut room);
    assert!(
        !out.iter().any(|o| matches!(o, RoomOutput::Subscribe { subscriber, .. } if subscriber.as_str() == "PA_g")),
        "a waiting guest receives no media"
    );
    assert!(
        !out.iter()
            .any(|o| matches!(o, RoomOutput::Signal { to, .. } if to.as_str() == "PA_h")),
        "the host is not told about a hidden guest"
    );
    room.handle_input(
        now,
        RoomInput::AdminUpdate {
            identity: ParticipantIdentity::new("guest"),
            name: String::new(),
            metadata: String::new(),
            attributes: HashMap::new(),
            permission: Some(lk::ParticipantPermission {
                can_subscribe: true,
                can_publish: true,
                can_publish_data: true,
                hidden: false,
                ..Default::default()
            }),
        },
    )
    .expect("admitted");
    let out = drain(&mut room);
    assert!(out.iter().any(|o| matches!(o,
        RoomOutput::Subscribe { subscriber, track: t, .. }
            if subscriber.as_str() == "PA_g" && t.sid == track.as_str())));
    let seen_by = |who: &str| {
        out.iter().any(|o| {
            matches!(o,
            RoomOutput::Signal { to, message: Msg::Update(u) }
                if to.as_str() == who && u.participants.iter().any(|p| p.identity == "guest"
                    && p.permission.as_ref().is_some_and(|perm| perm.can_publish)))
        })
    };
    assert!(seen_by("PA_h"), "the host sees the admitted guest");
    assert!(seen_by("PA_g"), "the guest learns its new permissions");
}

#[test]
fn revoking_publish_takes_down_tracks_and_hiding_leaves_the_others_view() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "ada");
    join(&mut room, now, "PA_b", "bea");
    let track = publish(&mut room, now, "PA_a", "cam", lk::TrackType::Video);
    drain(&mut room);
    room.handle_input(
        now,
        RoomInput::AdminUpdate {
            identity: ParticipantIdentity::new("ada"),
            name: String::new(),
            metadata: String::new(),
            attributes: HashMap::new(),
            permission: Some(lk::ParticipantPermission {
                can_subscribe: true,
                hidden: true,
                ..Default::default()
            }),
        },
    )
    .expect("updated");
    let out = drain(&mut room);
    assert!(out.iter().any(|o| matches!(o,
        RoomOutput::Unsubscribe { subscriber, track: t } if subscriber.as_str() == "PA_b" && *t == track)));
    assert!(out.iter().any(|o| matches!(o,
        RoomOutput::Signal { to, message: Msg::TrackUnpublished(_) } if to.as_str() == "PA_a")));
    let updates_to_bea: Vec<&lk::ParticipantInfo> = out
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Signal {
                to,
                message: Msg::Update(u),
            } if to.as_str() == "PA_b" => Some(u),
            _ => None,
        })
        .flat_map(|u| u.participants.iter())
        .filter(|p| p.identity == "ada")
        .collect();
    let last = updates_to_bea.last().expect("bea told about ada");
    assert_eq!(last.state, lk::participant_info::State::Disconnected as i32);
}

#[test]
fn participants_cannot_set_server_attributes() {
    let now = Instant::now();
    let mut room = new_room(now);
    let mut req = join_req("PA_a", "alice");
    req.grants.can_update_metadata = true;
    req.attributes = HashMap::from([("salon.role".to_owned(), "guest".to_owned())]);
    room.handle_input(now, RoomInput::Join(req)).expect("join");
    drain(&mut room);
    let set = |key: &str, value: &str| RoomInput::UpdateMetadata {
        sid: sid("PA_a"),
        update: lk::UpdateParticipantMetadata {
            attributes: HashMap::from([(key.to_owned(), value.to_owned())]),
            ..Default::default()
        },
    };
    for (key, value) in [("salon.role", "host"), ("salon.role", "")] {
        assert!(matches!(
            room.handle_input(now, set(key, value)),
            Err(RoomError::NotAllowed(_))
        ));
    }
    room.handle_input(now, set("hand", "1"))
        .expect("own attributes are fine");
    let alice = room
        .participant(&ParticipantIdentity::new("alice"))
        .expect("alice");
    assert_eq!(
        alice.attributes.get("salon.role").map(String::as_str),
        Some("guest")
    );
    assert_eq!(alice.attributes.get("hand").map(String::as_str), Some("1"));
}

#[test]
fn quality_changes_are_announced_once_and_newcomers_learn_them() {
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_a", "ada");
    join(&mut room, now, "PA_b", "bea");
    drain(&mut room);
    let quality = |q: lk::ConnectionQuality| RoomInput::Quality {
        sid: sid("PA_a"),
        quality: q,
        score: 2.0,
    };
    let updates = |out: &[RoomOutput]| -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                RoomOutput::Signal {
                    to,
                    message: Msg::ConnectionQuality(u),
                } => {
                    assert_eq!(u.updates[0].participant_sid, "PA_a");
                    Some(to.to_string())
                }
                _ => None,
            })
            .collect()
    };
    room.handle_input(now, quality(lk::ConnectionQuality::Poor))
        .expect("quality");
    let mut to = updates(&drain(&mut room));
    to.sort();
    assert_eq!(to, ["PA_a", "PA_b"], "everyone learns, the participant too");
    room.handle_input(now, quality(lk::ConnectionQuality::Poor))
        .expect("quality");
    assert!(
        updates(&drain(&mut room)).is_empty(),
        "no change, no update"
    );
    join(&mut room, now, "PA_c", "cid");
    let out = drain(&mut room);
    assert!(out.iter().any(|o| matches!(o,
        RoomOutput::Signal { to, message: Msg::ConnectionQuality(u) }
            if to.as_str() == "PA_c" && u.updates[0].quality == lk::ConnectionQuality::Poor as i32)));
}

#[test]
fn media_under_another_id_than_addtrack_gave_takes_the_pending_track_of_its_kind() {
    // Firefox's SDP names its tracks with ids of its own, not the cid that
    // livekit-client sent in AddTrack.
    let now = Instant::now();
    let mut room = new_room(now);
    join(&mut room, now, "PA_f", "firefox");
    join(&mut room, now, "PA_c", "chromium");
    let mut announced = Vec::new();
    for (cid, kind) in [("mic", lk::TrackType::Audio), ("cam", lk::TrackType::Video)] {
        let request = lk::AddTrackRequest {
            cid: cid.to_owned(),
            r#type: kind as i32,
            ..Default::default()
        };
        room.handle_input(
            now,
            RoomInput::AddTrack {
                sid: sid("PA_f"),
                request,
            },
        )
        .expect("add track");
        announced.extend(drain(&mut room).into_iter().filter_map(|o| match o {
            RoomOutput::Signal {
                message: Msg::TrackPublished(p),
                ..
            } => p.track,
            _ => None,
        }));
    }
    for (msid, mime) in [("{e7c2}", "video/VP8"), ("{269a}", "audio/opus")] {
        room.handle_input(
            now,
            RoomInput::MediaArrived {
                sid: sid("PA_f"),
                cid: msid.to_owned(),
                mime_type: mime.to_owned(),
                mid: String::new(),
            },
        )
        .expect("media matched to its pending track");
    }
    let out = drain(&mut room);
    let subscribed: Vec<&lk::TrackInfo> = out
        .iter()
        .filter_map(|o| match o {
            RoomOutput::Subscribe {
                subscriber, track, ..
            } if subscriber == &sid("PA_c") => Some(track),
            _ => None,
        })
        .collect();
    assert_eq!(subscribed.len(), 2, "{out:?}");
    let info = room.participants();
    let tracks = &info
        .iter()
        .find(|p| p.identity == "firefox")
        .expect("firefox")
        .tracks;
    let kind_of = |sid: &str| {
        tracks
            .iter()
            .find(|t| t.sid == sid)
            .map(|t| (t.r#type, t.mime_type.clone()))
    };
    for t in &announced {
        let (kind, mime) = kind_of(&t.sid).expect("published");
        assert_eq!(kind, t.r#type);
        assert!(mime.starts_with(if kind == lk::TrackType::Audio as i32 {
            "audio/"
        } else {
            "video/"
        }));
    }
    // The unknown id of a third stream, with nothing pending, is refused.
    let stray = room.handle_input(
        now,
        RoomInput::MediaArrived {
            sid: sid("PA_f"),
            cid: "{0000}".to_owned(),
            mime_type: "video/VP8".to_owned(),
            mid: String::new(),
        },
    );
    assert!(stray.is_err());
}
