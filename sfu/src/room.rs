//! The room state machine: who is in a room, what they publish and who
//! receives what. Sans-IO: it never touches a socket or reads a clock; the
//! room task (`room_task.rs`) feeds it inputs with an `Instant` and carries
//! out the outputs it queues.

use crate::rewriter::{Demand, Rank};
use crate::speakers::{Speakers, WindowSum};
use livekit_protocol as lk;
use salon_common::{ParticipantIdentity, ParticipantSid, RoomName, RoomSid, TrackSid, new_sid};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Why the room refused an input. Peers see these as signal errors, admins as
/// Twirp errors; none of them affects anyone else in the room.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RoomError {
    #[error("room is full")]
    RoomFull,
    #[error("participant not found")]
    ParticipantNotFound,
    #[error("track not found")]
    TrackNotFound,
    #[error("participant is not allowed to {0}")]
    NotAllowed(&'static str),
    #[error("invalid request: {0}")]
    Invalid(&'static str),
}

/// Settings a room is created with (CreateRoom, or defaults on first join).
#[derive(Clone, Debug)]
pub struct RoomConfig {
    pub empty_timeout: Duration,
    pub max_participants: u32,
    pub metadata: String,
}

impl Default for RoomConfig {
    fn default() -> Self {
        Self {
            empty_timeout: salon_common::DEFAULT_EMPTY_TIMEOUT,
            max_participants: 0,
            metadata: String::new(),
        }
    }
}

/// What a participant may do, from its token's grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grants {
    pub can_publish: bool,
    pub can_subscribe: bool,
    pub can_publish_data: bool,
    pub can_update_metadata: bool,
    pub hidden: bool,
}

impl Grants {
    fn to_proto(&self) -> lk::ParticipantPermission {
        lk::ParticipantPermission {
            can_subscribe: self.can_subscribe,
            can_publish: self.can_publish,
            can_publish_data: self.can_publish_data,
            can_update_metadata: self.can_update_metadata,
            hidden: self.hidden,
            ..Default::default()
        }
    }
}

/// A participant asking to join.
#[derive(Clone, Debug)]
pub struct JoinRequest {
    pub sid: ParticipantSid,
    pub identity: ParticipantIdentity,
    pub name: String,
    pub metadata: String,
    pub attributes: HashMap<String, String>,
    pub grants: Grants,
    pub auto_subscribe: bool,
    pub client_protocol: i32,
    /// Wall-clock join time in milliseconds since the Unix epoch.
    pub joined_at_ms: i64,
}

/// Everything that can happen to a room.
#[derive(Debug)]
pub enum RoomInput {
    Join(JoinRequest),
    Leave {
        sid: ParticipantSid,
    },
    AddTrack {
        sid: ParticipantSid,
        request: lk::AddTrackRequest,
    },
    /// The publisher's media for a track announced with `AddTrack` arrived;
    /// `cid` is the track id the client put in its SDP (msid).
    MediaArrived {
        sid: ParticipantSid,
        cid: String,
        mime_type: String,
        mid: String,
    },
    /// The publisher stopped sending the track it announced as `cid`.
    Unpublish {
        sid: ParticipantSid,
        cid: String,
    },
    Mute {
        sid: ParticipantSid,
        track: TrackSid,
        muted: bool,
    },
    UpdateMetadata {
        sid: ParticipantSid,
        update: lk::UpdateParticipantMetadata,
    },
    UpdateSubscription {
        sid: ParticipantSid,
        tracks: Vec<TrackSid>,
        subscribe: bool,
    },
    /// What a subscriber wants of tracks it receives: `setVideoQuality`, the
    /// size of the element showing it, or nothing (adaptive stream).
    TrackSettings {
        sid: ParticipantSid,
        settings: lk::UpdateTrackSettings,
    },
    /// A window of a participant's microphone levels ended.
    AudioLevel {
        sid: ParticipantSid,
        sum: WindowSum,
    },
    /// Admin: RemoveParticipant.
    Remove {
        identity: ParticipantIdentity,
    },
    /// Admin: MutePublishedTrack.
    AdminMute {
        identity: ParticipantIdentity,
        track: TrackSid,
        muted: bool,
    },
    /// Admin: UpdateParticipant.
    AdminUpdate {
        identity: ParticipantIdentity,
        name: String,
        metadata: String,
        attributes: HashMap<String, String>,
        permission: Option<lk::ParticipantPermission>,
    },
    /// A data packet a participant sent on one of its data channels.
    Data {
        sid: ParticipantSid,
        kind: lk::data_packet::Kind,
        packet: lk::DataPacket,
    },
    /// Admin: SendData, from the server rather than a participant.
    AdminData {
        kind: lk::data_packet::Kind,
        packet: lk::DataPacket,
    },
    /// How a participant's link did lately (see `quality`).
    Quality {
        sid: ParticipantSid,
        quality: lk::ConnectionQuality,
        score: f32,
    },
    /// Admin: DeleteRoom.
    Close,
    /// The room was placed on another node while this one was cut off from
    /// the fleet: everyone is asked to rejoin, which takes them there.
    HandOver,
}

/// What the room asks its shell to do.
// Control-plane messages, a handful per join or publish: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub enum RoomOutput {
    /// Send a signal message to one participant.
    Signal {
        to: ParticipantSid,
        message: lk::signal_response::Message,
    },
    /// A published track's media is flowing: start forwarding it under `track`.
    TrackReady {
        publisher: ParticipantSid,
        cid: String,
        track: TrackSid,
    },
    /// Start sending `track` to `subscriber`.
    Subscribe {
        subscriber: ParticipantSid,
        publisher: ParticipantSid,
        track: lk::TrackInfo,
    },
    /// What `subscriber` wants of `track` changed.
    SetDemand {
        subscriber: ParticipantSid,
        track: TrackSid,
        demand: Demand,
    },
    /// Stop sending `track` to `subscriber`.
    Unsubscribe {
        subscriber: ParticipantSid,
        track: TrackSid,
    },
    /// The track is gone for good (its publisher left).
    TrackGone { track: TrackSid },
    /// End this participant's session (after a leave message).
    Disconnect {
        sid: ParticipantSid,
        reason: lk::DisconnectReason,
    },
    /// Send an encoded data packet to one participant, on its channel for `kind`.
    Data {
        to: ParticipantSid,
        kind: lk::data_packet::Kind,
        payload: bytes::Bytes,
    },
    /// The room is closed; the shell drops it.
    Closed,
}

struct Participant {
    info: lk::ParticipantInfo,
    grants: Grants,
    auto_subscribe: bool,
    /// Tracks announced with AddTrack whose media has not arrived yet, by cid.
    /// Tracks asked for (AddTrack) whose media has not arrived, by the
    /// client's cid, with the order they were asked in.
    pending: HashMap<String, (u64, lk::TrackInfo)>,
    /// Published tracks by the cid their client knows them by.
    cids: HashMap<String, TrackSid>,
    /// What this participant receives, and what it wants of each.
    subscriptions: HashMap<TrackSid, Demand>,
    /// Its connection quality as last announced.
    quality: Option<lk::ConnectionQualityInfo>,
}

/// The state machine of one room.
pub struct Room {
    name: RoomName,
    sid: RoomSid,
    config: RoomConfig,
    created_at_ms: i64,
    /// Join order is kept so that participant lists read the same every time.
    participants: BTreeMap<u64, Participant>,
    by_sid: HashMap<ParticipantSid, u64>,
    next_seq: u64,
    empty_since: Option<Instant>,
    closed: bool,
    outputs: VecDeque<RoomOutput>,
    /// Per video track, the best layer some subscriber wants, as last told to
    /// its publisher (dynacast).
    dynacast: HashMap<TrackSid, Option<Rank>>,
    speakers: Speakers,
}

/// Attributes under this prefix come from the token or an admin call, never
/// from the participant itself: the web app trusts `salon.role` to say who
/// hosts, and a guest must not be able to claim it.
pub const SERVER_ATTRIBUTE_PREFIX: &str = "salon.";

/// Most tracks one participant may announce; a peer that sends AddTrack in a
/// loop must not grow the room without bound.
const MAX_TRACKS_PER_PARTICIPANT: usize = 32;

impl Room {
    pub fn new(name: RoomName, config: RoomConfig, created_at_ms: i64, now: Instant) -> Self {
        Self {
            name,
            sid: RoomSid::new(new_sid("RM_")),
            config,
            created_at_ms,
            participants: BTreeMap::new(),
            by_sid: HashMap::new(),
            next_seq: 0,
            empty_since: Some(now),
            closed: false,
            outputs: VecDeque::new(),
            dynacast: HashMap::new(),
            speakers: Speakers::default(),
        }
    }

    pub fn name(&self) -> &RoomName {
        &self.name
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The room as RoomService and JoinResponse describe it.
    pub fn info(&self) -> lk::Room {
        let visible = self.participants.values().filter(|p| !p.grants.hidden);
        let (mut num_participants, mut num_publishers) = (0, 0);
        for p in visible {
            num_participants += 1;
            if !p.info.tracks.is_empty() {
                num_publishers += 1;
            }
        }
        lk::Room {
            sid: self.sid.to_string(),
            name: self.name.to_string(),
            empty_timeout: self.config.empty_timeout.as_secs() as u32,
            departure_timeout: 20,
            max_participants: self.config.max_participants,
            creation_time: self.created_at_ms / 1000,
            creation_time_ms: self.created_at_ms,
            metadata: self.config.metadata.clone(),
            num_participants,
            num_publishers,
            ..Default::default()
        }
    }

    /// Every participant, hidden ones included (admins see them).
    pub fn participants(&self) -> Vec<lk::ParticipantInfo> {
        self.participants.values().map(|p| p.info.clone()).collect()
    }

    pub fn participant(&self, identity: &ParticipantIdentity) -> Option<lk::ParticipantInfo> {
        self.find_identity(identity)
            .map(|k| self.participants[&k].info.clone())
    }

    pub fn track(&self, track: &TrackSid) -> Option<lk::TrackInfo> {
        self.published(track).map(|(_, t)| t.clone())
    }

    /// When the room must next be woken: the end of its empty timeout, or
    /// a speaker falling silent.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let empty = self.empty_since.map(|t| t + self.config.empty_timeout);
        [empty, self.speakers.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        self.announce_speakers(now);
        if let Some(deadline) = self.empty_since.map(|t| t + self.config.empty_timeout)
            && now >= deadline
            && self.participants.is_empty()
        {
            self.close();
        }
    }

    #[must_use]
    pub fn poll_output(&mut self) -> Option<RoomOutput> {
        self.outputs.pop_front()
    }

    pub fn handle_input(&mut self, now: Instant, input: RoomInput) -> Result<(), RoomError> {
        if self.closed {
            return Err(RoomError::Invalid("room is closed"));
        }
        match input {
            RoomInput::Join(request) => self.join(request, now),
            RoomInput::Leave { sid } => {
                self.leave(&sid, now);
                Ok(())
            }
            RoomInput::AddTrack { sid, request } => self.add_track(&sid, request),
            RoomInput::MediaArrived {
                sid,
                cid,
                mime_type,
                mid,
            } => self.media_arrived(&sid, &cid, mime_type, mid),
            RoomInput::Unpublish { sid, cid } => self.unpublish(&sid, &cid),
            RoomInput::Mute { sid, track, muted } => {
                self.set_muted(&sid, &track, muted).map(|_| ())
            }
            RoomInput::UpdateMetadata { sid, update } => self.update_metadata(&sid, update),
            RoomInput::UpdateSubscription {
                sid,
                tracks,
                subscribe,
            } => self.update_subscription(&sid, &tracks, subscribe),
            RoomInput::TrackSettings { sid, settings } => {
                self.update_track_settings(&sid, settings)
            }
            RoomInput::AudioLevel { sid, sum } => {
                // Levels may trail a participant that just left.
                if self.by_sid.contains_key(&sid) {
                    self.speakers.report(now, &sid, sum);
                    self.announce_speakers(now);
                }
                Ok(())
            }
            RoomInput::Remove { identity } => {
                let key = self
                    .find_identity(&identity)
                    .ok_or(RoomError::ParticipantNotFound)?;
                let sid = self.sid_of(key);
                self.disconnect(&sid, lk::DisconnectReason::ParticipantRemoved, now);
                Ok(())
            }
            RoomInput::AdminMute {
                identity,
                track,
                muted,
            } => {
                let key = self
                    .find_identity(&identity)
                    .ok_or(RoomError::ParticipantNotFound)?;
                let sid = self.sid_of(key);
                self.set_muted(&sid, &track, muted)?;
                // The publisher's SDK applies the mute to its own track.
                self.outputs.push_back(RoomOutput::Signal {
                    to: sid,
                    message: lk::signal_response::Message::Mute(lk::MuteTrackRequest {
                        sid: track.to_string(),
                        muted,
                    }),
                });
                Ok(())
            }
            RoomInput::AdminUpdate {
                identity,
                name,
                metadata,
                attributes,
                permission,
            } => self.admin_update(&identity, name, metadata, attributes, permission),
            RoomInput::Quality {
                sid,
                quality,
                score,
            } => self.update_quality(&sid, quality, score),
            RoomInput::Data { sid, kind, packet } => self.relay_data(Some(&sid), kind, packet),
            RoomInput::AdminData { kind, packet } => self.relay_data(None, kind, packet),
            RoomInput::Close => {
                let sids: Vec<_> = self.by_sid.keys().cloned().collect();
                for sid in sids {
                    self.disconnect(&sid, lk::DisconnectReason::RoomDeleted, now);
                }
                self.close();
                Ok(())
            }
            RoomInput::HandOver => {
                let sids: Vec<_> = self.by_sid.keys().cloned().collect();
                for sid in sids {
                    self.disconnect_with(
                        &sid,
                        lk::DisconnectReason::Migration,
                        lk::leave_request::Action::Reconnect,
                        now,
                    );
                }
                self.close();
                Ok(())
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.outputs.push_back(RoomOutput::Closed);
    }

    fn find_identity(&self, identity: &ParticipantIdentity) -> Option<u64> {
        self.participants
            .iter()
            .find(|(_, p)| p.info.identity == identity.as_str())
            .map(|(k, _)| *k)
    }

    fn sid_of(&self, key: u64) -> ParticipantSid {
        ParticipantSid::new(self.participants[&key].info.sid.clone())
    }

    fn get_mut(&mut self, sid: &ParticipantSid) -> Result<&mut Participant, RoomError> {
        let key = self.by_sid.get(sid).ok_or(RoomError::ParticipantNotFound)?;
        self.participants
            .get_mut(key)
            .ok_or(RoomError::ParticipantNotFound)
    }

    fn join(&mut self, request: JoinRequest, now: Instant) -> Result<(), RoomError> {
        if let Some(existing) = self.find_identity(&request.identity) {
            // LiveKit's rule: a second session with the same identity replaces the first.
            let old = self.sid_of(existing);
            self.disconnect(&old, lk::DisconnectReason::DuplicateIdentity, now);
        }
        let visible = self
            .participants
            .values()
            .filter(|p| !p.grants.hidden)
            .count() as u32;
        if self.config.max_participants > 0
            && !request.grants.hidden
            && visible >= self.config.max_participants
        {
            return Err(RoomError::RoomFull);
        }
        let info = lk::ParticipantInfo {
            sid: request.sid.to_string(),
            identity: request.identity.to_string(),
            state: lk::participant_info::State::Joined as i32,
            metadata: request.metadata,
            joined_at: request.joined_at_ms / 1000,
            joined_at_ms: request.joined_at_ms,
            name: request.name,
            version: 1,
            permission: Some(request.grants.to_proto()),
            attributes: request.attributes,
            client_protocol: request.client_protocol,
            ..Default::default()
        };
        let others: Vec<lk::ParticipantInfo> = self
            .participants
            .values()
            .filter(|p| !p.grants.hidden)
            .map(|p| p.info.clone())
            .collect();
        let join = lk::JoinResponse {
            room: None,
            participant: Some(info.clone()),
            other_participants: others,
            server_version: salon_common::LIVEKIT_COMPATIBLE_VERSION.to_owned(),
            // Publisher first: the client offers right away, so the session is
            // connected before anyone publishes.
            subscriber_primary: false,
            ping_timeout: 15,
            ping_interval: 5,
            server_info: Some(lk::ServerInfo {
                edition: lk::server_info::Edition::Standard as i32,
                version: salon_common::LIVEKIT_COMPATIBLE_VERSION.to_owned(),
                debug_info: format!("salon {}", salon_common::SERVER_VERSION),
                protocol: 16,
                node_id: "salon".to_owned(),
                ..Default::default()
            }),
            client_configuration: Some(lk::ClientConfiguration {
                // Sessions are not resumable yet: ask clients for a full reconnect.
                resume_connection: lk::ClientConfigSetting::Disabled as i32,
                ..Default::default()
            }),
            ..Default::default()
        };
        let key = self.next_seq;
        self.next_seq += 1;
        let hidden = request.grants.hidden;
        let can_subscribe = request.grants.can_subscribe;
        self.participants.insert(
            key,
            Participant {
                info: info.clone(),
                grants: request.grants,
                auto_subscribe: request.auto_subscribe,
                pending: HashMap::new(),
                cids: HashMap::new(),
                subscriptions: HashMap::new(),
                quality: None,
            },
        );
        self.by_sid.insert(request.sid.clone(), key);
        self.empty_since = None;
        let mut join = join;
        join.room = Some(self.info());
        self.outputs.push_back(RoomOutput::Signal {
            to: request.sid.clone(),
            message: lk::signal_response::Message::Join(join),
        });
        if !hidden {
            self.broadcast_update(&info, Some(&request.sid));
        }
        if request.auto_subscribe && can_subscribe {
            self.subscribe_to_all(&request.sid);
        }
        // Updates only say what changed: a newcomer learns how the others'
        // links are and who speaks already.
        let qualities: Vec<lk::ConnectionQualityInfo> = self
            .participants
            .values()
            .filter(|p| !p.grants.hidden)
            .filter_map(|p| p.quality.clone())
            .collect();
        if !qualities.is_empty() {
            self.outputs.push_back(RoomOutput::Signal {
                to: request.sid.clone(),
                message: lk::signal_response::Message::ConnectionQuality(
                    lk::ConnectionQualityUpdate { updates: qualities },
                ),
            });
        }
        let speakers = self.speakers.announced();
        if !speakers.is_empty() {
            self.outputs.push_back(RoomOutput::Signal {
                to: request.sid.clone(),
                message: lk::signal_response::Message::SpeakersChanged(lk::SpeakersChanged {
                    speakers,
                }),
            });
        }
        Ok(())
    }

    fn subscribe(
        &mut self,
        subscriber: &ParticipantSid,
        publisher: ParticipantSid,
        track: lk::TrackInfo,
    ) {
        let Ok(p) = self.get_mut(subscriber) else {
            return;
        };
        let track_sid = TrackSid::new(track.sid.clone());
        if p.subscriptions
            .insert(track_sid.clone(), Demand::DEFAULT)
            .is_none()
        {
            self.outputs.push_back(RoomOutput::Subscribe {
                subscriber: subscriber.clone(),
                publisher,
                track,
            });
            self.update_dynacast(&track_sid);
        }
    }

    /// Tells everyone but `except` about a participant's new state; only
    /// the participant itself while it is hidden.
    fn broadcast_update(&mut self, info: &lk::ParticipantInfo, except: Option<&ParticipantSid>) {
        if info.permission.as_ref().is_some_and(|p| p.hidden) {
            let own = ParticipantSid::new(info.sid.clone());
            if except != Some(&own) && self.by_sid.contains_key(&own) {
                self.outputs.push_back(RoomOutput::Signal {
                    to: own,
                    message: lk::signal_response::Message::Update(lk::ParticipantUpdate {
                        participants: vec![info.clone()],
                    }),
                });
            }
            return;
        }
        self.broadcast_to_all(info, except);
    }

    /// Tells everyone but `except` about a participant, hidden or not.
    fn broadcast_to_all(&mut self, info: &lk::ParticipantInfo, except: Option<&ParticipantSid>) {
        let recipients: Vec<ParticipantSid> = self
            .by_sid
            .keys()
            .filter(|s| Some(*s) != except)
            .cloned()
            .collect();
        for to in recipients {
            self.outputs.push_back(RoomOutput::Signal {
                to,
                message: lk::signal_response::Message::Update(lk::ParticipantUpdate {
                    participants: vec![info.clone()],
                }),
            });
        }
    }

    fn disconnect(&mut self, sid: &ParticipantSid, reason: lk::DisconnectReason, now: Instant) {
        self.disconnect_with(sid, reason, lk::leave_request::Action::Disconnect, now);
    }

    fn disconnect_with(
        &mut self,
        sid: &ParticipantSid,
        reason: lk::DisconnectReason,
        action: lk::leave_request::Action,
        now: Instant,
    ) {
        if !self.by_sid.contains_key(sid) {
            return;
        }
        self.outputs.push_back(RoomOutput::Signal {
            to: sid.clone(),
            message: crate::leave_message(reason, action),
        });
        self.outputs.push_back(RoomOutput::Disconnect {
            sid: sid.clone(),
            reason,
        });
        self.leave(sid, now);
    }

    fn leave(&mut self, sid: &ParticipantSid, now: Instant) {
        let Some(key) = self.by_sid.remove(sid) else {
            return;
        };
        let Some(mut gone) = self.participants.remove(&key) else {
            return;
        };
        self.speakers.remove(sid);
        self.announce_speakers(now);
        for track in &gone.info.tracks {
            self.withdraw_track(&TrackSid::new(track.sid.clone()));
        }
        for (track, _) in gone.subscriptions.drain() {
            self.outputs.push_back(RoomOutput::Unsubscribe {
                subscriber: sid.clone(),
                track: track.clone(),
            });
            self.update_dynacast(&track);
        }
        if !gone.grants.hidden {
            gone.info.state = lk::participant_info::State::Disconnected as i32;
            gone.info.version += 1;
            self.broadcast_update(&gone.info, None);
        }
        if self.participants.is_empty() {
            self.empty_since = Some(now);
        }
    }

    fn add_track(
        &mut self,
        sid: &ParticipantSid,
        request: lk::AddTrackRequest,
    ) -> Result<(), RoomError> {
        let p = self.get_mut(sid)?;
        if !p.grants.can_publish {
            return Err(RoomError::NotAllowed("publish"));
        }
        if request.cid.is_empty() {
            return Err(RoomError::Invalid("track without cid"));
        }
        if p.pending.len() + p.info.tracks.len() >= MAX_TRACKS_PER_PARTICIPANT {
            return Err(RoomError::Invalid("too many tracks"));
        }
        let kind = lk::TrackType::try_from(request.r#type).unwrap_or(lk::TrackType::Audio);
        if kind == lk::TrackType::Data {
            return Err(RoomError::Invalid("data tracks are not supported"));
        }
        let track = lk::TrackInfo {
            sid: new_sid("TR_"),
            r#type: kind as i32,
            name: request.name.clone(),
            muted: request.muted,
            width: request.width,
            height: request.height,
            source: request.source,
            #[allow(deprecated)]
            layers: request.layers.clone(),
            #[allow(deprecated)]
            simulcast: request.layers.len() > 1,
            stream: request.stream.clone(),
            disable_red: request.disable_red,
            // Deprecated for audio_features, and still sent by livekit-client.
            #[allow(deprecated)]
            disable_dtx: request.disable_dtx,
            #[allow(deprecated)]
            stereo: request.stereo,
            audio_features: audio_features(&request),
            encryption: request.encryption,
            ..Default::default()
        };
        let order = p.pending.values().map(|(n, _)| n + 1).max().unwrap_or(0);
        p.pending
            .insert(request.cid.clone(), (order, track.clone()));
        self.outputs.push_back(RoomOutput::Signal {
            to: sid.clone(),
            message: lk::signal_response::Message::TrackPublished(lk::TrackPublishedResponse {
                cid: request.cid,
                track: Some(track),
            }),
        });
        Ok(())
    }

    fn media_arrived(
        &mut self,
        sid: &ParticipantSid,
        cid: &str,
        mime_type: String,
        mid: String,
    ) -> Result<(), RoomError> {
        let p = self.get_mut(sid)?;
        let key = pending_key(&p.pending, cid, &mime_type).ok_or(RoomError::TrackNotFound)?;
        let (_, mut track) = p.pending.remove(&key).ok_or(RoomError::TrackNotFound)?;
        track.mime_type = mime_type;
        track.mid = mid;
        p.info.tracks.push(track.clone());
        p.cids
            .insert(cid.to_owned(), TrackSid::new(track.sid.clone()));
        p.info.is_publisher = true;
        p.info.state = lk::participant_info::State::Active as i32;
        p.info.version += 1;
        let info = p.info.clone();
        let hidden = p.grants.hidden;
        let track_sid = TrackSid::new(track.sid.clone());
        self.outputs.push_back(RoomOutput::TrackReady {
            publisher: sid.clone(),
            cid: cid.to_owned(),
            track: track_sid,
        });
        if !hidden {
            self.broadcast_update(&info, None);
        }
        let subscribers: Vec<ParticipantSid> = self
            .participants
            .values()
            .filter(|o| o.info.sid != sid.as_str() && o.auto_subscribe && o.grants.can_subscribe)
            .map(|o| ParticipantSid::new(o.info.sid.clone()))
            .collect();
        for subscriber in subscribers {
            self.subscribe(&subscriber, sid.clone(), track.clone());
        }
        Ok(())
    }

    /// Unsubscribes everyone from a track that is going away, then drops it.
    fn withdraw_track(&mut self, track: &TrackSid) {
        for p in self.participants.values_mut() {
            if p.subscriptions.remove(track).is_some() {
                self.outputs.push_back(RoomOutput::Unsubscribe {
                    subscriber: ParticipantSid::new(p.info.sid.clone()),
                    track: track.clone(),
                });
            }
        }
        self.dynacast.remove(track);
        self.outputs.push_back(RoomOutput::TrackGone {
            track: track.clone(),
        });
    }

    fn unpublish(&mut self, sid: &ParticipantSid, cid: &str) -> Result<(), RoomError> {
        let p = self.get_mut(sid)?;
        if p.pending.remove(cid).is_some() {
            return Ok(());
        }
        let track = p.cids.remove(cid).ok_or(RoomError::TrackNotFound)?;
        p.info.tracks.retain(|t| t.sid != track.as_str());
        p.info.version += 1;
        let info = p.info.clone();
        let hidden = p.grants.hidden;
        self.withdraw_track(&track);
        self.outputs.push_back(RoomOutput::Signal {
            to: sid.clone(),
            message: lk::signal_response::Message::TrackUnpublished(lk::TrackUnpublishedResponse {
                track_sid: track.to_string(),
            }),
        });
        if !hidden {
            self.broadcast_update(&info, Some(sid));
        }
        Ok(())
    }

    fn set_muted(
        &mut self,
        sid: &ParticipantSid,
        track: &TrackSid,
        muted: bool,
    ) -> Result<lk::TrackInfo, RoomError> {
        let p = self.get_mut(sid)?;
        let t = p
            .info
            .tracks
            .iter_mut()
            .find(|t| t.sid == track.as_str())
            .ok_or(RoomError::TrackNotFound)?;
        if t.muted == muted {
            return Ok(t.clone());
        }
        t.muted = muted;
        let t = t.clone();
        p.info.version += 1;
        let info = p.info.clone();
        if !p.grants.hidden {
            self.broadcast_update(&info, None);
        }
        Ok(t)
    }

    fn update_metadata(
        &mut self,
        sid: &ParticipantSid,
        update: lk::UpdateParticipantMetadata,
    ) -> Result<(), RoomError> {
        let p = self.get_mut(sid)?;
        if !p.grants.can_update_metadata {
            return Err(RoomError::NotAllowed("update metadata"));
        }
        check_sizes(&update.name, &update.metadata)?;
        if update
            .attributes
            .keys()
            .any(|k| k.starts_with(SERVER_ATTRIBUTE_PREFIX))
        {
            return Err(RoomError::NotAllowed(
                "set attributes reserved for the server",
            ));
        }
        if !update.name.is_empty() {
            p.info.name = update.name;
        }
        if !update.metadata.is_empty() {
            p.info.metadata = update.metadata;
        }
        merge_attributes(&mut p.info.attributes, update.attributes);
        p.info.version += 1;
        let info = p.info.clone();
        self.broadcast_update(&info, None);
        Ok(())
    }

    fn admin_update(
        &mut self,
        identity: &ParticipantIdentity,
        name: String,
        metadata: String,
        attributes: HashMap<String, String>,
        permission: Option<lk::ParticipantPermission>,
    ) -> Result<(), RoomError> {
        check_sizes(&name, &metadata)?;
        let key = self
            .find_identity(identity)
            .ok_or(RoomError::ParticipantNotFound)?;
        let Some(p) = self.participants.get_mut(&key) else {
            return Err(RoomError::ParticipantNotFound);
        };
        if !name.is_empty() {
            p.info.name = name;
        }
        if !metadata.is_empty() {
            p.info.metadata = metadata;
        }
        merge_attributes(&mut p.info.attributes, attributes);
        let before = p.grants.clone();
        if let Some(permission) = permission {
            p.grants = Grants {
                can_publish: permission.can_publish,
                can_subscribe: permission.can_subscribe,
                can_publish_data: permission.can_publish_data,
                can_update_metadata: permission.can_update_metadata,
                hidden: permission.hidden,
            };
            p.info.permission = Some(permission);
        }
        p.info.version += 1;
        let after = p.grants.clone();
        let auto_subscribe = p.auto_subscribe;
        let sid = ParticipantSid::new(p.info.sid.clone());
        let cids: Vec<String> = p.cids.keys().cloned().collect();
        if before.can_publish && !after.can_publish {
            // Revoking publish takes down what was published, as LiveKit does.
            p.pending.clear();
            for cid in cids {
                self.unpublish(&sid, &cid)?;
            }
        }
        // One who appears (a guest admitted from the waiting room) is
        // announced to all by the update below; one who hides leaves the
        // others' view.
        if !before.hidden && after.hidden {
            let mut gone = self.get_mut(&sid)?.info.clone();
            gone.state = lk::participant_info::State::Disconnected as i32;
            self.broadcast_to_all(&gone, Some(&sid));
        }
        if !before.can_subscribe && after.can_subscribe && auto_subscribe {
            self.subscribe_to_all(&sid);
        } else if before.can_subscribe && !after.can_subscribe {
            let tracks: Vec<TrackSid> = self.get_mut(&sid)?.subscriptions.keys().cloned().collect();
            self.update_subscription(&sid, &tracks, false)?;
        }
        let info = self.get_mut(&sid)?.info.clone();
        self.broadcast_update(&info, None);
        Ok(())
    }

    /// Subscribes a participant to every track the others publish.
    fn subscribe_to_all(&mut self, sid: &ParticipantSid) {
        let published: Vec<(ParticipantSid, lk::TrackInfo)> = self
            .participants
            .values()
            .filter(|p| p.info.sid != sid.as_str())
            .flat_map(|p| {
                p.info
                    .tracks
                    .iter()
                    .map(|t| (ParticipantSid::new(p.info.sid.clone()), t.clone()))
            })
            .collect();
        for (publisher, track) in published {
            self.subscribe(sid, publisher, track);
        }
    }

    fn update_subscription(
        &mut self,
        sid: &ParticipantSid,
        tracks: &[TrackSid],
        subscribe: bool,
    ) -> Result<(), RoomError> {
        let p = self.get_mut(sid)?;
        if subscribe && !p.grants.can_subscribe {
            return Err(RoomError::NotAllowed("subscribe"));
        }
        for track in tracks {
            if subscribe {
                // Nobody subscribes to their own track.
                let found = self
                    .published(track)
                    .filter(|(publisher, _)| publisher != sid)
                    .map(|(publisher, t)| (publisher, t.clone()));
                if let Some((publisher, info)) = found {
                    self.subscribe(sid, publisher, info);
                }
            } else if self.get_mut(sid)?.subscriptions.remove(track).is_some() {
                self.outputs.push_back(RoomOutput::Unsubscribe {
                    subscriber: sid.clone(),
                    track: track.clone(),
                });
                self.update_dynacast(track);
            }
        }
        Ok(())
    }

    /// Sends a data packet to everyone it is for: the participants named in
    /// its destinations, or else everyone but its sender. Participants who
    /// may not subscribe (guests in a waiting room) get none.
    // The deprecated fields are what clients before protocol 14 read and
    // write; LiveKit still honours them, and so does Salon.
    #[allow(deprecated)]
    fn relay_data(
        &mut self,
        from: Option<&ParticipantSid>,
        kind: lk::data_packet::Kind,
        mut packet: lk::DataPacket,
    ) -> Result<(), RoomError> {
        use lk::data_packet::Value;
        match &packet.value {
            None => return Err(RoomError::Invalid("empty data packet")),
            // Speaker updates come from the server, never from a peer.
            Some(Value::Speaker(_)) => {
                return Err(RoomError::Invalid("speaker update from a client"));
            }
            Some(_) => {}
        }
        if let Some(sid) = from {
            let p = self.get_mut(sid)?;
            if !p.grants.can_publish_data {
                return Err(RoomError::NotAllowed("publish data"));
            }
            // The room says who sent a packet: no one can speak for another.
            packet.participant_identity = p.info.identity.clone();
            packet.participant_sid = p.info.sid.clone();
            if let Some(Value::User(user)) = &mut packet.value {
                user.participant_identity = p.info.identity.clone();
                user.participant_sid = p.info.sid.clone();
            }
        } else {
            packet.participant_identity.clear();
            packet.participant_sid.clear();
        }
        let mut identities = packet.destination_identities.clone();
        let mut sids = Vec::new();
        // Older clients name destinations inside the user packet.
        if let Some(Value::User(user)) = &packet.value {
            identities.extend(user.destination_identities.iter().cloned());
            sids.extend(user.destination_sids.iter().cloned());
        }
        packet.kind = kind as i32;
        let payload = bytes::Bytes::from(prost::Message::encode_to_vec(&packet));
        let everyone = identities.is_empty() && sids.is_empty();
        let recipients: Vec<ParticipantSid> = self
            .participants
            .values()
            .filter(|p| from.is_none_or(|s| s.as_str() != p.info.sid))
            .filter(|p| p.grants.can_subscribe)
            .filter(|p| {
                everyone || identities.contains(&p.info.identity) || sids.contains(&p.info.sid)
            })
            .map(|p| ParticipantSid::new(p.info.sid.clone()))
            .collect();
        for to in recipients {
            self.outputs.push_back(RoomOutput::Data {
                to,
                kind,
                payload: payload.clone(),
            });
        }
        Ok(())
    }

    /// Tells everyone when a participant's connection quality changes level
    /// (a hidden participant: only itself).
    fn update_quality(
        &mut self,
        sid: &ParticipantSid,
        quality: lk::ConnectionQuality,
        score: f32,
    ) -> Result<(), RoomError> {
        let p = self.get_mut(sid)?;
        let info = lk::ConnectionQualityInfo {
            participant_sid: sid.to_string(),
            quality: quality as i32,
            score,
        };
        let changed = p.quality.as_ref().is_none_or(|q| q.quality != info.quality);
        p.quality = Some(info.clone());
        if !changed {
            return Ok(());
        }
        let recipients: Vec<ParticipantSid> = if p.grants.hidden {
            vec![sid.clone()]
        } else {
            self.by_sid.keys().cloned().collect()
        };
        for to in recipients {
            self.outputs.push_back(RoomOutput::Signal {
                to,
                message: lk::signal_response::Message::ConnectionQuality(
                    lk::ConnectionQualityUpdate {
                        updates: vec![info.clone()],
                    },
                ),
            });
        }
        Ok(())
    }

    /// Tells everyone who started or stopped speaking, if anyone did.
    fn announce_speakers(&mut self, now: Instant) {
        let Some(speakers) = self.speakers.poll_changes(now) else {
            return;
        };
        let recipients: Vec<ParticipantSid> = self
            .participants
            .values()
            .map(|p| ParticipantSid::new(p.info.sid.clone()))
            .collect();
        for to in recipients {
            self.outputs.push_back(RoomOutput::Signal {
                to,
                message: lk::signal_response::Message::SpeakersChanged(lk::SpeakersChanged {
                    speakers: speakers.clone(),
                }),
            });
        }
    }

    fn update_track_settings(
        &mut self,
        sid: &ParticipantSid,
        settings: lk::UpdateTrackSettings,
    ) -> Result<(), RoomError> {
        self.get_mut(sid)?;
        for track_sid in settings.track_sids.iter().take(MAX_TRACKS_PER_SETTINGS) {
            let track_sid = TrackSid::new(track_sid.clone());
            let Some(info) = self.published(&track_sid).map(|(_, t)| t) else {
                continue;
            };
            let demand = demand_from_settings(info, &settings);
            let p = self.get_mut(sid)?;
            let Some(current) = p.subscriptions.get_mut(&track_sid) else {
                continue;
            };
            if *current == demand {
                continue;
            }
            *current = demand;
            self.outputs.push_back(RoomOutput::SetDemand {
                subscriber: sid.clone(),
                track: track_sid.clone(),
                demand,
            });
            self.update_dynacast(&track_sid);
        }
        Ok(())
    }

    /// The publisher and info of a published track.
    fn published(&self, track: &TrackSid) -> Option<(ParticipantSid, &lk::TrackInfo)> {
        self.participants.values().find_map(|p| {
            p.info
                .tracks
                .iter()
                .find(|t| t.sid == track.as_str())
                .map(|t| (ParticipantSid::new(p.info.sid.clone()), t))
        })
    }

    /// Tells a video track's publisher which layers its subscribers want,
    /// when that changed: livekit-client with `dynacast` stops encoding the
    /// others, which saves its CPU and uplink.
    fn update_dynacast(&mut self, track: &TrackSid) {
        let Some((publisher, info)) = self.published(track) else {
            return;
        };
        if info.r#type != lk::TrackType::Video as i32 {
            return;
        }
        let highest = self
            .participants
            .values()
            .filter_map(|p| match p.subscriptions.get(track) {
                Some(Demand::UpTo(rank)) => Some(*rank),
                _ => None,
            })
            .max();
        if self.dynacast.get(track) == Some(&highest) {
            return;
        }
        // livekit-client names codecs as the MIME subtype in lower case.
        let codec = info
            .mime_type
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        self.dynacast.insert(track.clone(), highest);
        let qualities: Vec<lk::SubscribedQuality> = [Rank::LOW, Rank::MEDIUM, Rank::HIGH]
            .into_iter()
            .map(|rank| lk::SubscribedQuality {
                quality: rank.quality() as i32,
                enabled: highest.is_some_and(|h| rank <= h),
            })
            .collect();
        // Current clients read the per-codec list, older ones the flat one.
        #[allow(deprecated)]
        let update = lk::SubscribedQualityUpdate {
            track_sid: track.to_string(),
            subscribed_qualities: qualities.clone(),
            subscribed_codecs: vec![lk::SubscribedCodec { codec, qualities }],
        };
        self.outputs.push_back(RoomOutput::Signal {
            to: publisher,
            message: lk::signal_response::Message::SubscribedQualityUpdate(update),
        });
    }
}

/// Most tracks one settings message may name; more are ignored.
const MAX_TRACKS_PER_SETTINGS: usize = 64;

/// LiveKit's slack when matching a layer to an element's size: a layer 10 %
/// smaller than the element still counts as big enough.
const SIZE_SLACK: f64 = 0.9;

/// What a subscriber's `UpdateTrackSettings` asks of a track: nothing if
/// disabled; else the smallest layer that fills the element (adaptive
/// stream sends its size), or the quality asked for (`setVideoQuality`).
fn demand_from_settings(track: &lk::TrackInfo, settings: &lk::UpdateTrackSettings) -> Demand {
    if settings.disabled {
        return Demand::Paused;
    }
    if track.r#type != lk::TrackType::Video as i32 {
        return Demand::DEFAULT;
    }
    if settings.width > 0 || settings.height > 0 {
        return Demand::UpTo(rank_for_size(track, settings.width, settings.height));
    }
    let quality = lk::VideoQuality::try_from(settings.quality).unwrap_or(lk::VideoQuality::High);
    Rank::of_quality(quality).map_or(Demand::Paused, Demand::UpTo)
}

/// The smallest layer the publisher announced that, scaled to fit a
/// `width` × `height` element, is not stretched; the best one if none is.
fn rank_for_size(track: &lk::TrackInfo, width: u32, height: u32) -> Rank {
    #[allow(deprecated)]
    let mut layers: Vec<(Rank, u32, u32)> = track
        .layers
        .iter()
        .filter_map(|l| {
            let quality = lk::VideoQuality::try_from(l.quality).ok()?;
            Some((Rank::of_quality(quality)?, l.width, l.height))
        })
        .collect();
    layers.sort();
    let fills = |&&(_, w, h): &&(Rank, u32, u32)| {
        f64::from(w) >= f64::from(width) * SIZE_SLACK
            || f64::from(h) >= f64::from(height) * SIZE_SLACK
    };
    layers
        .iter()
        .find(fills)
        .or(layers.last())
        .map_or(Rank::HIGH, |&(rank, _, _)| rank)
}

fn check_sizes(name: &str, metadata: &str) -> Result<(), RoomError> {
    if name.len() > salon_common::MAX_NAME_BYTES {
        return Err(RoomError::Invalid("name too long"));
    }
    if metadata.len() > salon_common::MAX_METADATA_BYTES {
        return Err(RoomError::Invalid("metadata too large"));
    }
    Ok(())
}

/// LiveKit's rule: an empty value deletes the attribute.
fn merge_attributes(into: &mut HashMap<String, String>, update: HashMap<String, String>) {
    for (k, v) in update {
        if v.is_empty() {
            into.remove(&k);
        } else {
            into.insert(k, v);
        }
    }
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;

/// The audio features of a track as LiveKit lists them: those the client
/// named, each once and in its order, then those its older flags stand for.
/// A few at most: there are seven, and the list goes to every participant.
#[allow(deprecated)] // the flags, which livekit-client still sends
fn audio_features(request: &lk::AddTrackRequest) -> Vec<i32> {
    const MOST: usize = 16;
    let flags = [
        (request.stereo, lk::AudioTrackFeature::TfStereo),
        (request.disable_dtx, lk::AudioTrackFeature::TfNoDtx),
    ];
    let mut features: Vec<i32> = Vec::new();
    let named = request.audio_features.iter().copied();
    let flagged = flags.iter().filter(|(set, _)| *set).map(|(_, f)| *f as i32);
    for feature in named.chain(flagged) {
        if !features.contains(&feature) {
            if features.len() == MOST {
                break;
            }
            features.push(feature);
        }
    }
    features
}

/// The pending track that media arriving as `cid` (the SDP's msid track id)
/// belongs to. Chromium's msid is the id livekit-client sent in AddTrack;
/// Firefox puts an id of its own there, so, as LiveKit does, a track that
/// matches no cid is taken to be the pending one of its kind (the oldest
/// request first when several wait).
fn pending_key(
    pending: &HashMap<String, (u64, lk::TrackInfo)>,
    cid: &str,
    mime_type: &str,
) -> Option<String> {
    if pending.contains_key(cid) {
        return Some(cid.to_owned());
    }
    let kind = if mime_type.starts_with("audio/") {
        lk::TrackType::Audio
    } else {
        lk::TrackType::Video
    };
    pending
        .iter()
        .filter(|(_, (_, t))| t.r#type == kind as i32)
        .min_by_key(|(_, (order, _))| *order)
        .map(|(key, _)| key.clone())
}

#[cfg(test)]
mod audio_feature_tests {
    use super::*;

    #[test]
    #[allow(deprecated)]
    fn flags_and_features_are_listed_once() {
        let request = lk::AddTrackRequest {
            stereo: true,
            disable_dtx: true,
            audio_features: vec![
                lk::AudioTrackFeature::TfNoDtx as i32,
                lk::AudioTrackFeature::TfEchoCancellation as i32,
            ],
            ..Default::default()
        };
        assert_eq!(
            audio_features(&request),
            vec![
                lk::AudioTrackFeature::TfNoDtx as i32,
                lk::AudioTrackFeature::TfEchoCancellation as i32,
                lk::AudioTrackFeature::TfStereo as i32,
            ]
        );
        assert!(audio_features(&lk::AddTrackRequest::default()).is_empty());
        // A client repeating itself, or naming values no one knows, is cut short.
        let flood = lk::AddTrackRequest {
            audio_features: (0..100_000).map(|i| i % 1000).collect(),
            ..Default::default()
        };
        assert_eq!(audio_features(&flood), (0..16).collect::<Vec<i32>>());
    }
}
