#![allow(clippy::unwrap_used)]

use super::*;

/// A VP8 payload descriptor with a 15-bit picture ID, TL0PICIDX and
/// TID/KEYIDX, then two bytes of frame.
fn payload(picture_id: u16, tl0: u8, keyidx: u8) -> Vec<u8> {
    vec![
        0x90, // X, S
        0xf0, // I, L, T, K
        0x80 | (picture_id >> 8) as u8,
        picture_id as u8,
        tl0,
        0x20 | keyidx, // TID 0, Y, KEYIDX
        0xaa,
        0xbb,
    ]
}

#[test]
fn a_full_descriptor_is_read_where_it_is() {
    let d = parse(&payload(0x1234, 7, 3)).unwrap();
    assert_eq!(d.picture_id, Some((0x1234, true, 2)));
    assert_eq!(d.tl0picidx, Some((7, 4)));
    assert_eq!(d.keyidx, Some((3, 5)));
}

#[test]
fn short_and_bare_descriptors() {
    // No extension: nothing to renumber.
    assert_eq!(parse(&[0x10, 0x00]), Some(Descriptor::default()));
    // A 7-bit picture ID only.
    let d = parse(&[0x90, 0x80, 0x45, 0x00]).unwrap();
    assert_eq!(d.picture_id, Some((0x45, false, 2)));
    assert_eq!(d.tl0picidx, None);
    // Fields announced but cut off: refused, not read past the end.
    assert_eq!(parse(&[0x90, 0xf0, 0x80]), None);
    assert_eq!(parse(&[0x90]), None);
    assert_eq!(parse(&[]), None);
}

#[test]
fn writing_changes_the_numbers_and_nothing_else() {
    let original = payload(0x1234, 7, 3);
    let d = parse(&original).unwrap();
    let mut copy = original.clone();
    d.write(
        &mut copy,
        Numbering {
            picture_id: 0x0102,
            tl0picidx: 9,
            keyidx: 30,
        },
    );
    assert_eq!(copy, payload(0x0102, 9, 30));
    let again = parse(&copy).unwrap();
    assert_eq!(again.picture_id, Some((0x0102, true, 2)));
}

/// A subscriber on layer A (pictures 100..) moves to layer B (pictures
/// 5000.., other TL0 and key indexes) and back: its numbers go on by one
/// at each switch, whatever the layers' own are.
#[test]
fn numbers_continue_across_switches() {
    let mut r = Renumber::default();
    let a = |n: u16| parse(&payload(100 + n, (10 + n) as u8, 1)).unwrap();
    let b = |n: u16| parse(&payload(5000 + n, (200 + n) as u8, 17)).unwrap();
    r.switch(&a(0));
    let mut out = Vec::new();
    for n in 0..3 {
        out.push(r.apply(&a(n)));
    }
    r.switch(&b(0));
    for n in 0..3 {
        out.push(r.apply(&b(n)));
    }
    r.switch(&a(10));
    out.push(r.apply(&a(10)));
    let ids: Vec<u16> = out.iter().map(|n| n.picture_id).collect();
    assert_eq!(ids, vec![100, 101, 102, 103, 104, 105, 106]);
    let tl0: Vec<u8> = out.iter().map(|n| n.tl0picidx).collect();
    assert_eq!(tl0, vec![10, 11, 12, 13, 14, 15, 16]);
    let keys: Vec<u8> = out.iter().map(|n| n.keyidx).collect();
    assert_eq!(keys, vec![1, 1, 1, 2, 2, 2, 3]);
}

#[test]
fn picture_ids_wrap_in_their_own_width() {
    let mut r = Renumber::default();
    let long = |id: u16| parse(&payload(id, 0, 0)).unwrap();
    r.switch(&long(0x7ffe));
    assert_eq!(r.apply(&long(0x7ffe)).picture_id, 0x7ffe);
    r.switch(&long(10));
    assert_eq!(r.apply(&long(10)).picture_id, 0x7fff);
    assert_eq!(r.apply(&long(11)).picture_id, 0);
    // A late packet of an older picture does not pull the next switch back.
    assert_eq!(r.apply(&long(10)).picture_id, 0x7fff);
    r.switch(&long(300));
    assert_eq!(r.apply(&long(300)).picture_id, 1);
}
