//! The async shell of one room: owns the `Room` state machine, the sessions'
//! command handles and the track forwarders, and carries out what the state
//! machine decides.

use crate::forwarder::{ForwarderCommand, ForwarderHandle};
use crate::participant::{ParticipantCommand, ParticipantHandle};
use crate::room::{JoinRequest, Room, RoomError, RoomInput, RoomOutput};
use livekit_protocol as lk;
use salon_common::{ParticipantSid, RoomName, TrackSid};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(crate) enum RoomEvent {
    Join {
        request: JoinRequest,
        participant: ParticipantHandle,
        reply: oneshot::Sender<Result<(), RoomError>>,
    },
    /// From a participant's own session; errors go to the log, not back.
    Input(RoomInput),
    /// An admin call; the reply carries the room's state after it.
    Admin {
        input: RoomInput,
        reply: oneshot::Sender<Result<RoomSnapshot, RoomError>>,
    },
    Media {
        publisher: ParticipantSid,
        cid: String,
        forwarder: ForwarderHandle,
    },
    Snapshot(oneshot::Sender<RoomSnapshot>),
}

/// A copy of a room's state for the admin API.
#[derive(Clone, Debug)]
pub struct RoomSnapshot {
    pub room: lk::Room,
    pub participants: Vec<lk::ParticipantInfo>,
}

struct RoomTask {
    room: Room,
    sessions: HashMap<ParticipantSid, ParticipantHandle>,
    forwarders: HashMap<TrackSid, ForwarderHandle>,
    /// Media that arrived and waits for the room to name its track.
    arrived: HashMap<(ParticipantSid, String), ForwarderHandle>,
}

/// Runs a room until it closes; `on_closed` is called with its name then.
pub(crate) async fn run(
    room: Room,
    mut events: mpsc::UnboundedReceiver<RoomEvent>,
    on_closed: impl FnOnce(&RoomName),
) {
    let mut task = RoomTask {
        room,
        sessions: HashMap::new(),
        forwarders: HashMap::new(),
        arrived: HashMap::new(),
    };
    loop {
        let deadline = task.room.poll_timeout();
        let event = tokio::select! {
            event = events.recv() => event,
            _ = sleep_until(deadline) => {
                task.room.handle_timeout(Instant::now().into_std());
                task.drain();
                if task.room.is_closed() { break; }
                continue;
            }
        };
        let Some(event) = event else { break };
        task.handle(event);
        if task.room.is_closed() {
            break;
        }
    }
    for session in task.sessions.values() {
        session.send(ParticipantCommand::Disconnect);
    }
    tracing::info!(room = %task.room.name(), "room closed");
    on_closed(task.room.name());
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

impl RoomTask {
    fn snapshot(&self) -> RoomSnapshot {
        RoomSnapshot {
            room: self.room.info(),
            participants: self.room.participants(),
        }
    }

    fn handle(&mut self, event: RoomEvent) {
        let now = Instant::now().into_std();
        match event {
            RoomEvent::Join {
                request,
                participant,
                reply,
            } => {
                let sid = request.sid.clone();
                // The handle must be known before the join's outputs are carried out.
                self.sessions.insert(sid.clone(), participant);
                let result = self.room.handle_input(now, RoomInput::Join(request));
                if result.is_err() {
                    self.sessions.remove(&sid);
                }
                let _ = reply.send(result);
            }
            RoomEvent::Input(input) => {
                if let RoomInput::Leave { sid } = &input {
                    self.sessions.remove(sid);
                }
                if let Err(err) = self.room.handle_input(now, input) {
                    tracing::debug!(%err, "room refused a participant's request");
                }
            }
            RoomEvent::Admin { input, reply } => {
                let result = self.room.handle_input(now, input);
                let _ = reply.send(result.map(|()| self.snapshot()));
            }
            RoomEvent::Media {
                publisher,
                cid,
                forwarder,
            } => {
                let mime_type = forwarder.codec.mime_type.clone();
                self.arrived
                    .insert((publisher.clone(), cid.clone()), forwarder);
                let input = RoomInput::MediaArrived {
                    sid: publisher.clone(),
                    cid: cid.clone(),
                    mime_type,
                    mid: String::new(),
                };
                if let Err(err) = self.room.handle_input(now, input) {
                    // Media nobody announced (or from someone who left): drop it,
                    // which stops its forwarder.
                    tracing::debug!(%err, "media for an unknown track");
                    self.arrived.remove(&(publisher, cid));
                }
            }
            RoomEvent::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
        }
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(output) = self.room.poll_output() {
            match output {
                RoomOutput::Signal { to, message } => {
                    if let Some(session) = self.sessions.get(&to) {
                        session.send(ParticipantCommand::Signal(message));
                    }
                }
                RoomOutput::TrackReady {
                    publisher,
                    cid,
                    track,
                } => {
                    if let Some(forwarder) = self.arrived.remove(&(publisher, cid)) {
                        self.forwarders.insert(track, forwarder);
                    }
                }
                RoomOutput::Subscribe {
                    subscriber,
                    publisher,
                    track,
                } => {
                    let forwarder = self.forwarders.get(&TrackSid::new(track.sid.clone()));
                    if let (Some(session), Some(forwarder)) =
                        (self.sessions.get(&subscriber), forwarder)
                    {
                        session.send(ParticipantCommand::AddDownTrack {
                            publisher,
                            track,
                            forwarder: forwarder.clone(),
                        });
                    }
                }
                RoomOutput::SetDemand {
                    subscriber,
                    track,
                    demand,
                } => {
                    if let Some(forwarder) = self.forwarders.get(&track) {
                        forwarder.send(ForwarderCommand::Demand { subscriber, demand });
                    }
                }
                RoomOutput::Unsubscribe { subscriber, track } => {
                    if let Some(forwarder) = self.forwarders.get(&track) {
                        forwarder.send(ForwarderCommand::Remove(subscriber.clone()));
                    }
                    if let Some(session) = self.sessions.get(&subscriber) {
                        session.send(ParticipantCommand::RemoveDownTrack { track });
                    }
                }
                RoomOutput::TrackGone { track } => {
                    // Dropping the last handle ends the forwarder.
                    self.forwarders.remove(&track);
                }
                RoomOutput::Disconnect { sid, .. } => {
                    if let Some(session) = self.sessions.remove(&sid) {
                        session.send(ParticipantCommand::Disconnect);
                    }
                }
                RoomOutput::Data { to, kind, payload } => {
                    if let Some(session) = self.sessions.get(&to) {
                        session.send(ParticipantCommand::Data { kind, payload });
                    }
                }
                RoomOutput::Closed => {}
            }
        }
    }
}
