//! The VP8 payload descriptor's frame numbering (RFC 7741 §4.2): picture
//! ID, TL0PICIDX and KEYIDX. Each simulcast layer numbers its frames on its
//! own, and browsers use these numbers to tell which frames a frame
//! refers to. A subscriber moved from one layer to another must see them
//! continue, as the RTP sequence numbers do, or its decoder waits for
//! frames that never come. Sans-IO and allocation-free.

/// Where a payload's numbering fields are, and their values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// The picture ID, whether it is the 15-bit form, and its offset.
    pub picture_id: Option<(u16, bool, usize)>,
    pub tl0picidx: Option<(u8, usize)>,
    pub keyidx: Option<(u8, usize)>,
}

/// The numbers one subscriber's copy of a packet carries instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numbering {
    pub picture_id: u16,
    pub tl0picidx: u8,
    pub keyidx: u8,
}

/// The descriptor of one VP8 payload; `None` if it is too short for what
/// its first bytes announce.
pub fn parse(payload: &[u8]) -> Option<Descriptor> {
    let first = *payload.first()?;
    let mut descriptor = Descriptor::default();
    if first & 0x80 == 0 {
        return Some(descriptor);
    }
    let ext = *payload.get(1)?;
    let mut at = 2;
    if ext & 0x80 != 0 {
        let b = *payload.get(at)?;
        if b & 0x80 != 0 {
            let low = *payload.get(at + 1)?;
            descriptor.picture_id = Some((u16::from(b & 0x7f) << 8 | u16::from(low), true, at));
            at += 2;
        } else {
            descriptor.picture_id = Some((u16::from(b), false, at));
            at += 1;
        }
    }
    if ext & 0x40 != 0 {
        descriptor.tl0picidx = Some((*payload.get(at)?, at));
        at += 1;
    }
    if ext & 0x30 != 0 {
        let b = *payload.get(at)?;
        if ext & 0x10 != 0 {
            descriptor.keyidx = Some((b & 0x1f, at));
        }
    }
    Some(descriptor)
}

impl Descriptor {
    /// Writes `numbering` into `payload`, a copy of the payload this
    /// descriptor was parsed from; fields it lacks stay absent.
    pub fn write(&self, payload: &mut [u8], numbering: Numbering) {
        if let Some((_, long, at)) = self.picture_id {
            if long {
                if let Some(bytes) = payload.get_mut(at..at + 2) {
                    let id = numbering.picture_id & 0x7fff;
                    bytes[0] = 0x80 | (id >> 8) as u8;
                    bytes[1] = id as u8;
                }
            } else if let Some(b) = payload.get_mut(at) {
                *b = (numbering.picture_id & 0x7f) as u8;
            }
        }
        if let Some((_, at)) = self.tl0picidx
            && let Some(b) = payload.get_mut(at)
        {
            *b = numbering.tl0picidx;
        }
        if let Some((_, at)) = self.keyidx
            && let Some(b) = payload.get_mut(at)
        {
            *b = (*b & 0xe0) | (numbering.keyidx & 0x1f);
        }
    }
}

/// One subscriber's renumbering of a track's VP8 frames: offsets fixed at
/// each layer switch so that the numbers go on from the last ones sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Renumber {
    picture_id: u16,
    tl0picidx: u8,
    keyidx: u8,
    last: Option<Numbering>,
}

impl Renumber {
    /// Starts a new layer at `descriptor` (a keyframe): its numbers follow
    /// the last ones sent.
    pub fn switch(&mut self, descriptor: &Descriptor) {
        let Some(last) = self.last else {
            *self = Self::default();
            return;
        };
        if let Some((id, _, _)) = descriptor.picture_id {
            self.picture_id = last.picture_id.wrapping_add(1).wrapping_sub(id);
        }
        if let Some((idx, _)) = descriptor.tl0picidx {
            self.tl0picidx = last.tl0picidx.wrapping_add(1).wrapping_sub(idx);
        }
        if let Some((idx, _)) = descriptor.keyidx {
            self.keyidx = last.keyidx.wrapping_add(1).wrapping_sub(idx);
        }
    }

    /// The numbers a packet of the current layer goes out with.
    pub fn apply(&mut self, descriptor: &Descriptor) -> Numbering {
        let mask = match descriptor.picture_id {
            Some((_, false, _)) => 0x7f,
            _ => 0x7fff,
        };
        let out = Numbering {
            picture_id: descriptor
                .picture_id
                .map_or(0, |(id, _, _)| id.wrapping_add(self.picture_id) & mask),
            tl0picidx: descriptor
                .tl0picidx
                .map_or(0, |(idx, _)| idx.wrapping_add(self.tl0picidx)),
            keyidx: descriptor
                .keyidx
                .map_or(0, |(idx, _)| idx.wrapping_add(self.keyidx) & 0x1f),
        };
        self.last = Some(match self.last {
            // Keep the newest: a late packet of an earlier frame must not
            // pull the next switch's numbers back.
            Some(last) if !newer(out.picture_id, last.picture_id, mask) => last,
            _ => out,
        });
        out
    }
}

/// Whether picture ID `a` comes after `b`, within half the number space.
fn newer(a: u16, b: u16, mask: u16) -> bool {
    let diff = a.wrapping_sub(b) & mask;
    diff != 0 && diff <= mask / 2
}

#[cfg(test)]
#[path = "vp8_tests.rs"]
mod tests;
