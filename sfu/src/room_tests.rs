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
    room.handle_input(
        now,
        RoomInput::AddTrack {
            sid: sid(who),
            request: lk::AddTrackRequest {
                cid: cid.to_owned(),
                r#type: kind as i32,
                name: cid.to_owned(),
                ..Default::default()
            },
        },
    )
    .expect("add track");
    let outputs = drain(room);
    let track = outputs
        .iter()
        .find_map(|o| match o {
            RoomOutput::Signal {
                message: Msg::TrackPublished(p),
                ..
            } => p.track.clone(),
            _ => None,
        })
        .expect("TrackPublished");
    room.handle_input(
        now,
        RoomInput::MediaArrived {
            sid: sid(who),
            cid: cid.to_owned(),
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
