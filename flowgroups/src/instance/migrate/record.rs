//! The records of the migration stream and how they travel in forwarding-ring chunks (the
//! format is described in the [parent module](super)). Everything read here came from
//! another instance's process: it is length-checked and validated, and a bad record is an
//! error to count, never a panic.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use tcp_core::tcp::{CodecError, ConnectionState};

use crate::channel::proto::RequestSlot;
use crate::channel::server::SocketBinding;
use crate::control::FrameSlot;
use crate::instance::rx::{CHUNK_FIRST, CHUNK_HEADER, CHUNK_LAST};

/// (local port, remote end) of a connection: the local address is the stack's own.
pub(crate) type TupleKey = (u16, SocketAddrV4);

/// Record kinds (first byte of a chunk).
pub(crate) const REC_CONN: u8 = 1;
pub(crate) const REC_RESIDUE: u8 = 2;
pub(crate) const REC_EXPORT_END: u8 = 3;
pub(crate) const REC_FORWARDING_DONE: u8 = 4;
pub(crate) const REC_RESIDUE_GONE: u8 = 5;
pub(crate) const REC_APP_REQUEST: u8 = 6;

/// Largest record accepted: a connection with full default buffers is about 200 KiB; a
/// residue list of 100,000 tuples is 1 MB.
const MAX_RECORD: usize = 16 << 20;

const BINDING_CONNECTED: u8 = 1;
const BINDING_EOF: u8 = 2;
const BINDING_SHUT_WR_PENDING: u8 = 4;
const BINDING_SHUT_WR_DONE: u8 = 8;

/// One decoded record.
#[derive(Debug)]
pub(crate) enum Record {
    /// A connection of `group` and its app binding.
    Conn { group: u32, binding: SocketBinding, state: Box<ConnectionState> },
    /// Connections of `group` that stay where they are (`holder`): their segments must be
    /// handed to the holder.
    Residue { group: u32, entries: Vec<(TupleKey, u16)> },
    /// Every connection of `group` has been sent (`connections` of them).
    ExportEnd { group: u32, connections: u32 },
    /// The sender drained its receive queue past the steering switch of `group`: no more
    /// stragglers follow.
    ForwardingDone { group: u32 },
    /// Connections the sender held for groups it no longer owns are gone.
    ResidueGone { tuples: Vec<TupleKey> },
    /// A request the app sent to the sender for a slot that migrated here.
    AppRequest { app_id: u32, request: RequestSlot },
}

/// Why a record was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RecordError {
    /// Shorter or longer than its kind says.
    Length(u8),
    /// An unknown kind or flag bits.
    Kind(u8),
    /// The connection state did not decode.
    State(CodecError),
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Length(k) => write!(f, "migration record of kind {k} has a bad length"),
            RecordError::Kind(k) => write!(f, "unknown migration record kind {k}"),
            RecordError::State(e) => write!(f, "migrated connection: {e}"),
        }
    }
}

fn put_tuple(out: &mut Vec<u8>, key: &TupleKey) {
    out.extend_from_slice(&key.0.to_le_bytes());
    out.extend_from_slice(&key.1.ip().octets());
    out.extend_from_slice(&key.1.port().to_le_bytes());
}

/// A connection record: group, binding, then the encoded TCB.
pub(crate) fn encode_conn(group: u32, b: &SocketBinding, state: &ConnectionState) -> Vec<u8> {
    let mut out = Vec::with_capacity(13 + 1024);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&b.app_id.to_le_bytes());
    out.extend_from_slice(&b.slot.to_le_bytes());
    let mut flags = 0;
    for (on, bit) in [
        (b.connected, BINDING_CONNECTED),
        (b.eof, BINDING_EOF),
        (b.shut_wr_pending, BINDING_SHUT_WR_PENDING),
        (b.shut_wr_done, BINDING_SHUT_WR_DONE),
    ] {
        if on {
            flags |= bit;
        }
    }
    out.push(flags);
    state.encode(&mut out);
    out
}

pub(crate) fn encode_residue(group: u32, entries: &[(TupleKey, u16)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * 10);
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(u32::MAX).to_le_bytes());
    for (key, holder) in entries {
        put_tuple(&mut out, key);
        out.extend_from_slice(&holder.to_le_bytes());
    }
    out
}

pub(crate) fn encode_export_end(group: u32, connections: u32) -> Vec<u8> {
    let mut out = group.to_le_bytes().to_vec();
    out.extend_from_slice(&connections.to_le_bytes());
    out
}

pub(crate) fn encode_group(group: u32) -> Vec<u8> {
    group.to_le_bytes().to_vec()
}

pub(crate) fn encode_gone(tuples: &[TupleKey]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + tuples.len() * 8);
    out.extend_from_slice(&u32::try_from(tuples.len()).unwrap_or(u32::MAX).to_le_bytes());
    for key in tuples {
        put_tuple(&mut out, key);
    }
    out
}

pub(crate) fn encode_app_request(app_id: u32, r: &RequestSlot) -> Vec<u8> {
    let mut out = Vec::with_capacity(68);
    out.extend_from_slice(&app_id.to_le_bytes());
    out.extend_from_slice(&r.opcode.to_le_bytes());
    out.extend_from_slice(&r.flags.to_le_bytes());
    out.extend_from_slice(&r.sock.to_le_bytes());
    out.extend_from_slice(&r.user.to_le_bytes());
    for a in r.args {
        out.extend_from_slice(&a.to_le_bytes());
    }
    out
}

/// A little-endian cursor over a record.
struct Cursor<'a> {
    rest: &'a [u8],
    kind: u8,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.rest.len() < n {
            return Err(RecordError::Length(self.kind));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn tuple(&mut self) -> Result<TupleKey, RecordError> {
        let port = self.u16()?;
        let ip = Ipv4Addr::from(self.array::<4>()?);
        Ok((port, SocketAddrV4::new(ip, self.u16()?)))
    }
    /// A count of items `size` bytes each that must exactly fill the rest (after `extra`).
    fn count(&mut self, size: usize) -> Result<usize, RecordError> {
        let n = self.u32()? as usize;
        if n.checked_mul(size) != Some(self.rest.len()) {
            return Err(RecordError::Length(self.kind));
        }
        Ok(n)
    }
    fn end(&self) -> Result<(), RecordError> {
        if self.rest.is_empty() { Ok(()) } else { Err(RecordError::Length(self.kind)) }
    }
}

/// Decodes a complete record of `kind`.
pub(crate) fn decode_record(kind: u8, bytes: &[u8]) -> Result<Record, RecordError> {
    let mut c = Cursor { rest: bytes, kind };
    let record = match kind {
        REC_CONN => {
            let group = c.u32()?;
            let app_id = c.u32()?;
            let slot = c.u32()?;
            let flags = c.array::<1>()?[0];
            if flags & !0x0f != 0 {
                return Err(RecordError::Kind(kind));
            }
            let state = ConnectionState::decode(c.rest).map_err(RecordError::State)?;
            c.rest = &[];
            let binding = SocketBinding {
                app_id,
                slot,
                connected: flags & BINDING_CONNECTED != 0,
                eof: flags & BINDING_EOF != 0,
                shut_wr_pending: flags & BINDING_SHUT_WR_PENDING != 0,
                shut_wr_done: flags & BINDING_SHUT_WR_DONE != 0,
            };
            Record::Conn { group, binding, state: Box::new(state) }
        }
        REC_RESIDUE => {
            let group = c.u32()?;
            let n = c.count(10)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let key = c.tuple()?;
                entries.push((key, c.u16()?));
            }
            Record::Residue { group, entries }
        }
        REC_EXPORT_END => Record::ExportEnd { group: c.u32()?, connections: c.u32()? },
        REC_FORWARDING_DONE => Record::ForwardingDone { group: c.u32()? },
        REC_RESIDUE_GONE => {
            let n = c.count(8)?;
            let mut tuples = Vec::with_capacity(n);
            for _ in 0..n {
                tuples.push(c.tuple()?);
            }
            Record::ResidueGone { tuples }
        }
        REC_APP_REQUEST => {
            let app_id = c.u32()?;
            let opcode = c.u16()?;
            let flags = c.u16()?;
            let sock = c.u32()?;
            let user = c.u64()?;
            let mut args = [0u32; 12];
            for a in &mut args {
                *a = c.u32()?;
            }
            Record::AppRequest { app_id, request: RequestSlot { opcode, flags, sock, user, args } }
        }
        other => return Err(RecordError::Kind(other)),
    };
    c.end()?;
    Ok(record)
}

/// A record being put back together from its chunks.
#[derive(Debug)]
struct Partial {
    kind: u8,
    total: usize,
    bytes: Vec<u8>,
}

/// Reassembles records per sending peer. A peer's ring is FIFO and a sender emits the
/// chunks of one record back to back, so one partial record per peer suffices.
#[derive(Debug, Default)]
pub(crate) struct Reassembly {
    partial: BTreeMap<u16, Partial>,
    /// Chunks that did not fit the record being assembled (or any).
    pub(crate) broken: u64,
}

impl Reassembly {
    /// Takes one chunk slot from `peer`; returns a record once its last chunk arrived.
    pub(crate) fn push(&mut self, peer: u16, slot: &FrameSlot) -> Option<(u8, Vec<u8>)> {
        let data = slot.frame()?;
        let (Some(&kind), Some(&flags), Some(total)) = (data.first(), data.get(1), data.get(4..8))
        else {
            self.broken += 1;
            return None;
        };
        let total = u32::from_le_bytes([total[0], total[1], total[2], total[3]]) as usize;
        let part = data.get(CHUNK_HEADER..).unwrap_or(&[]);
        if flags & !(CHUNK_FIRST | CHUNK_LAST) != 0 || total > MAX_RECORD {
            self.broken += 1;
            self.partial.remove(&peer);
            return None;
        }
        if flags & CHUNK_FIRST != 0 {
            if self.partial.remove(&peer).is_some() {
                self.broken += 1;
            }
            self.partial.insert(peer, Partial { kind, total, bytes: Vec::with_capacity(total) });
        }
        let Some(p) = self.partial.get_mut(&peer) else {
            self.broken += 1;
            return None;
        };
        if p.kind != kind || p.total != total || p.bytes.len() + part.len() > total {
            self.broken += 1;
            self.partial.remove(&peer);
            return None;
        }
        p.bytes.extend_from_slice(part);
        if flags & CHUNK_LAST == 0 {
            return None;
        }
        let p = self.partial.remove(&peer)?;
        if p.bytes.len() != p.total {
            self.broken += 1;
            return None;
        }
        Some((p.kind, p.bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::rx::SLOT_RECORD;
    use proptest::prelude::*;

    fn chunks(kind: u8, group: u32, bytes: &[u8]) -> Vec<FrameSlot> {
        let room = crate::control::FRAME_SLOT_DATA - CHUNK_HEADER;
        let parts: Vec<&[u8]> =
            if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(room).collect() };
        let n = parts.len();
        parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let mut data = vec![kind, 0, 0, 0];
                if i == 0 {
                    data[1] |= CHUNK_FIRST;
                }
                if i + 1 == n {
                    data[1] |= CHUNK_LAST;
                }
                data.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
                data.extend_from_slice(part);
                let mut s = FrameSlot::new(&data, group, 0).unwrap();
                s.reserved = SLOT_RECORD;
                s
            })
            .collect()
    }

    #[test]
    fn records_round_trip() {
        let key = (80u16, SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 40000));
        let residue = encode_residue(5, &[(key, 1)]);
        match decode_record(REC_RESIDUE, &residue).unwrap() {
            Record::Residue { group: 5, entries } => assert_eq!(entries, vec![(key, 1)]),
            r => panic!("{r:?}"),
        }
        let gone = encode_gone(&[key, key]);
        assert!(matches!(
            decode_record(REC_RESIDUE_GONE, &gone).unwrap(),
            Record::ResidueGone { tuples } if tuples == vec![key, key]
        ));
        let req = RequestSlot { opcode: 4, flags: 0, sock: 7, user: 99, args: [3; 12] };
        match decode_record(REC_APP_REQUEST, &encode_app_request(12, &req)).unwrap() {
            Record::AppRequest { app_id: 12, request } => assert_eq!(request, req),
            r => panic!("{r:?}"),
        }
        assert!(matches!(
            decode_record(REC_EXPORT_END, &encode_export_end(3, 20)).unwrap(),
            Record::ExportEnd { group: 3, connections: 20 }
        ));
        // Lengths must be exact.
        assert_eq!(
            decode_record(REC_FORWARDING_DONE, &[1, 0, 0]).err(),
            Some(RecordError::Length(4))
        );
        let mut long = encode_group(1);
        long.push(0);
        assert!(decode_record(REC_FORWARDING_DONE, &long).is_err());
        assert!(decode_record(REC_RESIDUE, &residue[..residue.len() - 1]).is_err());
        assert_eq!(decode_record(77, &[]).err(), Some(RecordError::Kind(77)));
    }

    #[test]
    fn chunks_reassemble_in_order_and_damage_is_counted() {
        let bytes: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let mut r = Reassembly::default();
        let cs = chunks(REC_CONN, 1, &bytes);
        assert_eq!(cs.len(), 3);
        assert!(r.push(2, &cs[0]).is_none());
        assert!(r.push(2, &cs[1]).is_none());
        assert_eq!(r.push(2, &cs[2]), Some((REC_CONN, bytes.clone())));
        assert_eq!(r.broken, 0);
        // A missing middle chunk: the record is dropped, the next one still assembles.
        assert!(r.push(2, &cs[0]).is_none());
        assert!(r.push(2, &cs[2]).is_none());
        assert_eq!(r.broken, 1);
        let empty = chunks(REC_FORWARDING_DONE, 1, &[]);
        assert_eq!(r.push(2, &empty[0]), Some((REC_FORWARDING_DONE, vec![])));
        // Peers are independent.
        assert!(r.push(1, &cs[0]).is_none());
        assert!(r.push(3, &cs[0]).is_none());
        assert!(r.push(1, &cs[1]).is_none());
        assert!(r.push(1, &cs[2]).is_some());
    }

    proptest! {
        /// Arbitrary chunk slots and record bodies never panic.
        #[test]
        fn hostile_chunks_and_records(
            data in proptest::collection::vec(any::<u8>(), 0..64),
            kind in any::<u8>(),
            peer in 0u16..3,
        ) {
            let mut r = Reassembly::default();
            let mut s = FrameSlot::new(&data, 0, 0).unwrap();
            s.reserved = SLOT_RECORD;
            if let Some((k, bytes)) = r.push(peer, &s) {
                let _ = decode_record(k, &bytes);
            }
            let _ = decode_record(kind, &data);
        }
    }
}
