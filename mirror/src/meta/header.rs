//! The header a metadata copy keeps: the volume's shape and its legs' states,
//! and its encoding into a checksummed 8 KiB slot.
//!
//! Slot: frame (16, see `format`) | header sequence u64 | payload length u32 |
//! 4 reserved zero bytes | payload | zeros to 8 KiB. The CRC covers the whole
//! slot. Payload: volume id \[16\] | size u64 | block_size u32 | region_size u64 |
//! generation u64 | clean u8 | leg count u8 | name | legs, each: state u8 |
//! full u8 | in_sync_generation u64 | rebuild_cursor u64 | identity | path |
//! reason | then source request. A string is a u16 byte length and its UTF-8
//! bytes.

use super::format::{check_frame, seal, DecodeError, Geometry, FRAME, HEADER_MAGIC, SLOT_SIZE};
use super::MetaError;
use crate::config::MAX_LEGS;
use std::io::{self, Read};

const SLOT_BODY: usize = FRAME + 16;
/// Longest volume name, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest leg identity, in bytes.
pub const MAX_IDENTITY: usize = 128;
/// Longest leg path, in bytes.
pub const MAX_PATH: usize = 256;
/// Longest fault reason, in bytes.
pub const MAX_REASON: usize = 128;

/// What a metadata copy records about the volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Random at creation; tells this volume's copies from any other's.
    pub volume_id: [u8; 16],
    /// A name for messages; at most [`MAX_NAME`] bytes.
    pub name: String,
    /// Volume size in bytes.
    pub size: u64,
    /// Logical block size the host sees, in bytes.
    pub block_size: u32,
    /// Bytes per bitmap bit.
    pub region_size: u64,
    /// Bumped by the engine on every leg state change.
    pub generation: u64,
    /// True only after a clean shutdown.
    pub clean: bool,
    /// The legs, in configuration order; at most `MAX_LEGS`.
    pub legs: Vec<LegRecord>,
    /// The last `source=N` request honoured, as `N:token` (empty: none), so
    /// that a request kept in the LUN's configuration applies only once.
    pub source_request: String,
}

/// Longest source request record, in bytes.
pub const MAX_SOURCE_REQUEST: usize = 80;

/// What a metadata copy records about one leg.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegRecord {
    /// At most [`MAX_IDENTITY`] bytes, e.g. `file:dev=2049,ino=1234`.
    pub identity: String,
    /// At most [`MAX_PATH`] bytes; for messages.
    pub path: String,
    /// Where the leg stands.
    pub state: RecordedState,
    /// Fault reason text, at most [`MAX_REASON`] bytes; empty if none.
    pub reason: String,
    /// The generation at which this leg was last in sync.
    pub in_sync_generation: u64,
    /// Regions `[0, cursor)` already copied by the current rebuild.
    pub rebuild_cursor: u64,
}

/// A leg's state as the metadata keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordedState {
    /// Holds every acknowledged write.
    InSync,
    /// Out of sync after a fault; `LegRecord::reason` says which.
    Faulted,
    /// Being copied to.
    Rebuilding {
        /// The whole leg is copied, not only the bitmap's regions.
        full: bool,
    },
    /// Taken out by the administrator.
    Offline,
}

impl Header {
    /// The bitmap's geometry for this volume; refuses sizes that make no bitmap.
    pub fn geometry(&self) -> Result<Geometry, MetaError> {
        Geometry::new(self.size, self.block_size, self.region_size)
    }

    /// A new volume's header: a random id, generation 0, not clean (nothing
    /// has been shut down yet), and `legs` as given.
    pub fn new(
        name: &str,
        size: u64,
        block_size: u32,
        region_size: u64,
        legs: Vec<LegRecord>,
    ) -> io::Result<Header> {
        Ok(Header {
            volume_id: random_id()?,
            name: name.to_owned(),
            size,
            block_size,
            region_size,
            generation: 0,
            clean: false,
            legs,
            source_request: String::new(),
        })
    }

    /// The volume id as 32 hex digits, for messages.
    pub fn id_hex(&self) -> String {
        hex(&self.volume_id)
    }

    #[cfg(test)]
    pub(crate) fn for_tests() -> Header {
        let leg = |i: usize| LegRecord::in_sync(&format!("file:dev=1,ino={i}"), &format!("/legs/{i}"));
        let mut h = Header::new("vol", 64 << 20, 512, 64 << 10, vec![leg(0), leg(1)]).unwrap();
        h.generation = 1;
        h
    }
}

impl LegRecord {
    /// A leg in sync since generation 0.
    pub fn in_sync(identity: &str, path: &str) -> LegRecord {
        LegRecord {
            identity: identity.to_owned(),
            path: path.to_owned(),
            state: RecordedState::InSync,
            reason: String::new(),
            in_sync_generation: 0,
            rebuild_cursor: 0,
        }
    }
}

/// 16 random bytes from `/dev/urandom`.
pub fn random_id() -> io::Result<[u8; 16]> {
    let mut id = [0; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
    Ok(id)
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks the limits a header must respect to be encoded.
pub fn validate(h: &Header) -> Result<(), MetaError> {
    check_len("name length", &h.name, MAX_NAME)?;
    if h.legs.len() > MAX_LEGS {
        return Err(MetaError::TooLarge { field: "leg count", len: h.legs.len(), max: MAX_LEGS });
    }
    for leg in &h.legs {
        check_len("leg identity length", &leg.identity, MAX_IDENTITY)?;
        check_len("leg path length", &leg.path, MAX_PATH)?;
        check_len("leg fault reason length", &leg.reason, MAX_REASON)?;
    }
    check_len("source request length", &h.source_request, MAX_SOURCE_REQUEST)?;
    if h.volume_id == [0; 16] {
        return Err(MetaError::Invalid {
            what: "volume_id is all zeros; make headers with Header::new".into(),
        });
    }
    h.geometry().map(drop)
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), MetaError> {
    if s.len() > max {
        return Err(MetaError::TooLarge { field, len: s.len(), max });
    }
    Ok(())
}

/// Encodes `h` into a slot stamped with header sequence `seq`.
pub fn encode_slot(h: &Header, seq: u64) -> Result<Vec<u8>, MetaError> {
    validate(h)?;
    let mut p = Vec::with_capacity(SLOT_SIZE);
    p.extend_from_slice(&h.volume_id);
    p.extend_from_slice(&h.size.to_le_bytes());
    p.extend_from_slice(&h.block_size.to_le_bytes());
    p.extend_from_slice(&h.region_size.to_le_bytes());
    p.extend_from_slice(&h.generation.to_le_bytes());
    p.extend_from_slice(&[u8::from(h.clean), h.legs.len() as u8]);
    put_str(&mut p, &h.name);
    for leg in &h.legs {
        let (state, full) = state_code(leg.state);
        p.extend_from_slice(&[state, full]);
        p.extend_from_slice(&leg.in_sync_generation.to_le_bytes());
        p.extend_from_slice(&leg.rebuild_cursor.to_le_bytes());
        put_str(&mut p, &leg.identity);
        put_str(&mut p, &leg.path);
        put_str(&mut p, &leg.reason);
    }
    put_str(&mut p, &h.source_request);
    let mut slot = vec![0u8; SLOT_SIZE];
    slot[FRAME..FRAME + 8].copy_from_slice(&seq.to_le_bytes());
    slot[FRAME + 8..FRAME + 12].copy_from_slice(&(p.len() as u32).to_le_bytes());
    slot[SLOT_BODY..SLOT_BODY + p.len()].copy_from_slice(&p);
    seal(&mut slot, &HEADER_MAGIC);
    Ok(slot)
}

fn put_str(p: &mut Vec<u8>, s: &str) {
    p.extend_from_slice(&(s.len() as u16).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

fn state_code(s: RecordedState) -> (u8, u8) {
    match s {
        RecordedState::InSync => (0, 0),
        RecordedState::Faulted => (1, 0),
        RecordedState::Rebuilding { full } => (2, u8::from(full)),
        RecordedState::Offline => (3, 0),
    }
}

/// Decodes a slot into its header and header sequence; never panics.
pub fn decode_slot(slot: &[u8]) -> Result<(Header, u64), DecodeError> {
    check_frame(slot, &HEADER_MAGIC, SLOT_SIZE)?;
    let mut r = Reader { buf: &slot[FRAME..], pos: 0 };
    let seq = r.u64()?;
    let len = r.u32()? as usize;
    if len > SLOT_SIZE - SLOT_BODY {
        return Err(DecodeError::Field("payload length"));
    }
    let mut r = Reader { buf: &slot[SLOT_BODY..SLOT_BODY + len], pos: 0 };
    let h = read_header(&mut r)?;
    if r.pos != len {
        return Err(DecodeError::Field("payload length"));
    }
    Ok((h, seq))
}

fn read_header(r: &mut Reader<'_>) -> Result<Header, DecodeError> {
    let mut volume_id = [0; 16];
    volume_id.copy_from_slice(r.take(16)?);
    let (size, block_size, region_size, generation) = (r.u64()?, r.u32()?, r.u64()?, r.u64()?);
    let clean = r.flag("clean flag")?;
    let nlegs = r.u8()? as usize;
    if nlegs > MAX_LEGS {
        return Err(DecodeError::Field("leg count"));
    }
    let name = r.str(MAX_NAME, "name")?;
    let legs = (0..nlegs).map(|_| read_leg(r)).collect::<Result<_, _>>()?;
    let source_request = r.str(MAX_SOURCE_REQUEST, "source request")?;
    Ok(Header { volume_id, name, size, block_size, region_size, generation, clean, legs, source_request })
}

fn read_leg(r: &mut Reader<'_>) -> Result<LegRecord, DecodeError> {
    let state = match (r.u8()?, r.flag("rebuild kind")?) {
        (0, false) => RecordedState::InSync,
        (1, false) => RecordedState::Faulted,
        (2, full) => RecordedState::Rebuilding { full },
        (3, false) => RecordedState::Offline,
        _ => return Err(DecodeError::Field("leg state")),
    };
    let (in_sync_generation, rebuild_cursor) = (r.u64()?, r.u64()?);
    Ok(LegRecord {
        state,
        in_sync_generation,
        rebuild_cursor,
        identity: r.str(MAX_IDENTITY, "leg identity")?,
        path: r.str(MAX_PATH, "leg path")?,
        reason: r.str(MAX_REASON, "leg fault reason")?,
    })
}

/// A bounds-checked little-endian cursor.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(DecodeError::Truncated)?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Field(what)),
        }
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from(self.u32()?) | u64::from(self.u32()?) << 32)
    }
    fn str(&mut self, max: usize, what: &'static str) -> Result<String, DecodeError> {
        let b = self.take(2)?;
        let len = usize::from(u16::from_le_bytes([b[0], b[1]]));
        if len > max {
            return Err(DecodeError::Field(what));
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError::Field(what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_round_trips_through_a_slot() {
        let h = Header::for_tests();
        assert_eq!(decode_slot(&encode_slot(&h, 9).unwrap()), Ok((h, 9)));
    }

    #[test]
    fn the_largest_header_fits_one_slot() {
        let h = crate::meta::testutil::full_header();
        assert_eq!(decode_slot(&encode_slot(&h, 1).unwrap()).unwrap().0, h);
    }

    #[test]
    fn a_too_long_name_is_refused_by_the_encoder() {
        let mut h = Header::for_tests();
        h.name = "x".repeat(MAX_NAME + 1);
        assert!(matches!(encode_slot(&h, 1), Err(MetaError::TooLarge { field: "name length", .. })));
    }

    #[test]
    fn too_many_legs_are_refused_by_the_encoder() {
        let mut h = Header::for_tests();
        h.legs = vec![h.legs[0].clone(); MAX_LEGS + 1];
        assert!(matches!(encode_slot(&h, 1), Err(MetaError::TooLarge { field: "leg count", .. })));
    }

    #[test]
    fn a_torn_slot_fails_the_checksum() {
        let mut slot = encode_slot(&Header::for_tests(), 1).unwrap();
        slot[4096..].fill(0xEE);
        assert_eq!(decode_slot(&slot), Err(DecodeError::Checksum));
    }
}
