//! Control messages between the control plane and kernel instances, and forwarded frames.
//!
//! A [`ControlMessage`] travels as a 64-byte [`ControlSlot`] on the control rings
//! (DESIGN.md "Processes", "Flow-group balancing"). The slot is plain integers; a receiver
//! turns it back into a message with [`ControlMessage::decode`], which rejects unknown
//! opcodes, out-of-range group and instance numbers and non-zero unused fields, so a
//! garbled slot is an error to count, never a panic or a wrong action.

use std::fmt;
use std::mem::offset_of;

use super::ControlLayout;
use crate::shm::Pod;

/// One control message as stored in a control ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ControlSlot {
    /// Which message (`OP_*` below); 0 never names a message, so a zeroed slot is invalid.
    pub opcode: u32,
    /// Narrow arguments; their meaning depends on the opcode.
    pub args: [u32; 3],
    /// Wide argument (heartbeat sequence number).
    pub wide: u64,
    /// Must be zero (room for later versions).
    pub reserved: [u64; 5],
}

const _: () = assert!(size_of::<ControlSlot>() == 64);
const _: () = assert!(offset_of!(ControlSlot, args) == 4);
const _: () = assert!(offset_of!(ControlSlot, wide) == 16);
const _: () = assert!(offset_of!(ControlSlot, reserved) == 24);

// SAFETY: repr(C), integers and integer arrays only, no padding (the asserts above account
// for all 64 bytes), so every bit pattern is a valid ControlSlot.
unsafe impl Pod for ControlSlot {}

const OP_APP_ATTACHED: u32 = 1;
const OP_APP_DETACHED: u32 = 2;
const OP_FREEZE_GROUP: u32 = 3;
const OP_EXPORT_DONE: u32 = 4;
const OP_IMPORT_GROUP: u32 = 5;
const OP_GROUP_OWNED: u32 = 6;
const OP_SET_OWNER: u32 = 7;
const OP_FORWARDING_DONE: u32 = 8;
const OP_HEARTBEAT: u32 = 9;
const OP_SHUTDOWN: u32 = 10;

/// A control-plane ↔ instance message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    /// Plane → instance: an application registered; its segment and wake-up fds follow on
    /// the instance's Unix socket.
    AppAttached {
        /// Identifier the plane gave the application.
        app_id: u32,
    },
    /// Plane → instance: the application died or left; reset and free its sockets.
    AppDetached {
        /// Identifier of the application.
        app_id: u32,
    },
    /// Plane → current owner: stop serving `group`, export its connections for `to`.
    FreezeGroup {
        /// Flow group to move.
        group: u32,
        /// Instance that will own it.
        to: u16,
    },
    /// Old owner → plane: `group` is frozen and its `connections` are exported.
    ExportDone {
        /// Flow group being moved.
        group: u32,
        /// Number of connections exported.
        connections: u32,
    },
    /// Plane → new owner: import `group`'s connections exported by `from` and serve it.
    ImportGroup {
        /// Flow group being moved.
        group: u32,
        /// Instance that exported it.
        from: u16,
    },
    /// New owner → plane: `group` is imported and served.
    GroupOwned {
        /// Flow group now served.
        group: u32,
    },
    /// Plane → instances: `group` now belongs to `owner` (software steering table and
    /// straggler forwarding follow it).
    SetOwner {
        /// Flow group.
        group: u32,
        /// Its new owner.
        owner: u16,
    },
    /// Old owner → plane: its receive queue has drained past the steering switch; no more
    /// stragglers of `group` will be forwarded.
    ForwardingDone {
        /// Flow group.
        group: u32,
    },
    /// Either direction: liveness probe or answer, echoing `seq`.
    Heartbeat {
        /// Sequence number chosen by the sender of the probe.
        seq: u64,
    },
    /// Plane → instance: finish and exit.
    Shutdown,
}

/// Why a [`ControlSlot`] did not decode.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The opcode names no message.
    UnknownOpcode(u32),
    /// A group number is not below the layout's group count.
    GroupOutOfRange {
        /// The value found.
        group: u32,
        /// Number of groups in the layout.
        groups: u32,
    },
    /// An instance number is not below the layout's instance count.
    InstanceOutOfRange {
        /// The value found.
        instance: u32,
        /// Number of instances in the layout.
        instances: u16,
    },
    /// A field the opcode does not use is not zero.
    UnusedFieldSet {
        /// Opcode of the slot.
        opcode: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::UnknownOpcode(op) => write!(f, "unknown control opcode {op}"),
            DecodeError::GroupOutOfRange { group, groups } => {
                write!(f, "flow group {group} out of range (have {groups})")
            }
            DecodeError::InstanceOutOfRange { instance, instances } => {
                write!(f, "instance {instance} out of range (have {instances})")
            }
            DecodeError::UnusedFieldSet { opcode } => {
                write!(f, "control message {opcode} has a non-zero unused field")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

impl ControlMessage {
    /// Encodes the message into a slot; unused fields are zero.
    pub fn encode(&self) -> ControlSlot {
        let (opcode, args, wide) = match *self {
            ControlMessage::AppAttached { app_id } => (OP_APP_ATTACHED, [app_id, 0, 0], 0),
            ControlMessage::AppDetached { app_id } => (OP_APP_DETACHED, [app_id, 0, 0], 0),
            ControlMessage::FreezeGroup { group, to } => {
                (OP_FREEZE_GROUP, [group, u32::from(to), 0], 0)
            }
            ControlMessage::ExportDone { group, connections } => {
                (OP_EXPORT_DONE, [group, connections, 0], 0)
            }
            ControlMessage::ImportGroup { group, from } => {
                (OP_IMPORT_GROUP, [group, u32::from(from), 0], 0)
            }
            ControlMessage::GroupOwned { group } => (OP_GROUP_OWNED, [group, 0, 0], 0),
            ControlMessage::SetOwner { group, owner } => {
                (OP_SET_OWNER, [group, u32::from(owner), 0], 0)
            }
            ControlMessage::ForwardingDone { group } => (OP_FORWARDING_DONE, [group, 0, 0], 0),
            ControlMessage::Heartbeat { seq } => (OP_HEARTBEAT, [0, 0, 0], seq),
            ControlMessage::Shutdown => (OP_SHUTDOWN, [0, 0, 0], 0),
        };
        ControlSlot { opcode, args, wide, reserved: [0; 5] }
    }

    /// Decodes and validates a slot against the segment's layout.
    pub fn decode(
        slot: &ControlSlot,
        layout: &ControlLayout,
    ) -> Result<ControlMessage, DecodeError> {
        let opcode = slot.opcode;
        let [a, b, c] = slot.args;
        // Which of (args[1], args[2], wide) the opcode uses; the rest must be zero.
        let (uses_b, uses_wide) = match opcode {
            OP_FREEZE_GROUP | OP_EXPORT_DONE | OP_IMPORT_GROUP | OP_SET_OWNER => (true, false),
            OP_HEARTBEAT => (false, true),
            OP_APP_ATTACHED | OP_APP_DETACHED | OP_GROUP_OWNED | OP_FORWARDING_DONE
            | OP_SHUTDOWN => (false, false),
            _ => return Err(DecodeError::UnknownOpcode(opcode)),
        };
        let uses_a = !matches!(opcode, OP_HEARTBEAT | OP_SHUTDOWN);
        let unused_set = (!uses_a && a != 0)
            || (!uses_b && b != 0)
            || c != 0
            || (!uses_wide && slot.wide != 0)
            || slot.reserved != [0; 5];
        if unused_set {
            return Err(DecodeError::UnusedFieldSet { opcode });
        }
        let group = |g: u32| {
            if g < layout.groups() {
                Ok(g)
            } else {
                Err(DecodeError::GroupOutOfRange { group: g, groups: layout.groups() })
            }
        };
        let instance = |i: u32| match u16::try_from(i) {
            Ok(i) if i < layout.instances() => Ok(i),
            _ => {
                Err(DecodeError::InstanceOutOfRange { instance: i, instances: layout.instances() })
            }
        };
        Ok(match opcode {
            OP_APP_ATTACHED => ControlMessage::AppAttached { app_id: a },
            OP_APP_DETACHED => ControlMessage::AppDetached { app_id: a },
            OP_FREEZE_GROUP => ControlMessage::FreezeGroup { group: group(a)?, to: instance(b)? },
            OP_EXPORT_DONE => ControlMessage::ExportDone { group: group(a)?, connections: b },
            OP_IMPORT_GROUP => ControlMessage::ImportGroup { group: group(a)?, from: instance(b)? },
            OP_GROUP_OWNED => ControlMessage::GroupOwned { group: group(a)? },
            OP_SET_OWNER => ControlMessage::SetOwner { group: group(a)?, owner: instance(b)? },
            OP_FORWARDING_DONE => ControlMessage::ForwardingDone { group: group(a)? },
            OP_HEARTBEAT => ControlMessage::Heartbeat { seq: slot.wide },
            _ => ControlMessage::Shutdown,
        })
    }
}

/// Largest frame a [`FrameSlot`] carries (a full-size Ethernet frame without FCS fits).
pub const FRAME_SLOT_DATA: usize = 2032;

/// One Ethernet frame on a forwarding ring (instance → instance): software steering and
/// live-migration stragglers.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrameSlot {
    /// Bytes of `data` in use; validated against [`FRAME_SLOT_DATA`] on read.
    pub len: u32,
    /// Flow group of the frame, as computed by the forwarding instance.
    pub group: u32,
    /// RSS hash of the frame (0 if unknown).
    pub hash: u32,
    /// Must be zero (room for later versions).
    pub reserved: u32,
    /// The frame, starting with the Ethernet header.
    pub data: [u8; FRAME_SLOT_DATA],
}

const _: () = assert!(size_of::<FrameSlot>() == 2048);
const _: () = assert!(offset_of!(FrameSlot, data) == 16);

// SAFETY: repr(C), integers and a byte array only, no padding (2048 = 16 + 2032), so every
// bit pattern is a valid FrameSlot.
unsafe impl Pod for FrameSlot {}

impl fmt::Debug for FrameSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameSlot")
            .field("len", &self.len)
            .field("group", &self.group)
            .field("hash", &self.hash)
            .finish_non_exhaustive()
    }
}

impl FrameSlot {
    /// A slot carrying `frame`, or `None` if it is longer than [`FRAME_SLOT_DATA`].
    pub fn new(frame: &[u8], group: u32, hash: u32) -> Option<FrameSlot> {
        let mut data = [0u8; FRAME_SLOT_DATA];
        data.get_mut(..frame.len())?.copy_from_slice(frame);
        Some(FrameSlot { len: u32::try_from(frame.len()).ok()?, group, hash, reserved: 0, data })
    }

    /// The frame bytes, or `None` if the (peer-written) length is impossible.
    pub fn frame(&self) -> Option<&[u8]> {
        self.data.get(..usize::try_from(self.len).ok()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout() -> ControlLayout {
        ControlLayout::new(4, 128, 8).unwrap()
    }

    fn all_messages() -> Vec<ControlMessage> {
        vec![
            ControlMessage::AppAttached { app_id: 7 },
            ControlMessage::AppDetached { app_id: u32::MAX },
            ControlMessage::FreezeGroup { group: 127, to: 3 },
            ControlMessage::ExportDone { group: 0, connections: 99_999 },
            ControlMessage::ImportGroup { group: 5, from: 0 },
            ControlMessage::GroupOwned { group: 64 },
            ControlMessage::SetOwner { group: 1, owner: 2 },
            ControlMessage::ForwardingDone { group: 9 },
            ControlMessage::Heartbeat { seq: u64::MAX - 3 },
            ControlMessage::Shutdown,
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for m in all_messages() {
            assert_eq!(ControlMessage::decode(&m.encode(), &layout()), Ok(m));
        }
    }

    #[test]
    fn zeroed_and_unknown_opcodes_are_rejected() {
        let l = layout();
        assert_eq!(
            ControlMessage::decode(&ControlSlot::default(), &l),
            Err(DecodeError::UnknownOpcode(0))
        );
        let slot = ControlSlot { opcode: 11, ..ControlSlot::default() };
        assert_eq!(ControlMessage::decode(&slot, &l), Err(DecodeError::UnknownOpcode(11)));
    }

    #[test]
    fn out_of_range_group_and_instance_are_rejected() {
        let l = layout();
        let bad_group = ControlMessage::GroupOwned { group: 128 }.encode();
        assert_eq!(
            ControlMessage::decode(&bad_group, &l),
            Err(DecodeError::GroupOutOfRange { group: 128, groups: 128 })
        );
        let bad_instance = ControlMessage::SetOwner { group: 3, owner: 4 }.encode();
        assert_eq!(
            ControlMessage::decode(&bad_instance, &l),
            Err(DecodeError::InstanceOutOfRange { instance: 4, instances: 4 })
        );
        let mut huge = ControlMessage::FreezeGroup { group: 3, to: 0 }.encode();
        huge.args[1] = 0x1_0000;
        assert!(matches!(
            ControlMessage::decode(&huge, &l),
            Err(DecodeError::InstanceOutOfRange { .. })
        ));
    }

    #[test]
    fn stray_bits_in_unused_fields_are_rejected() {
        let l = layout();
        let mut s = ControlMessage::Shutdown.encode();
        s.wide = 1;
        assert_eq!(ControlMessage::decode(&s, &l), Err(DecodeError::UnusedFieldSet { opcode: 10 }));
        let mut s = ControlMessage::GroupOwned { group: 1 }.encode();
        s.args[1] = 1;
        assert!(matches!(ControlMessage::decode(&s, &l), Err(DecodeError::UnusedFieldSet { .. })));
        let mut s = ControlMessage::Heartbeat { seq: 5 }.encode();
        s.reserved[4] = 1;
        assert!(matches!(ControlMessage::decode(&s, &l), Err(DecodeError::UnusedFieldSet { .. })));
    }

    #[test]
    fn frame_slot_bounds() {
        let f = FrameSlot::new(&[1, 2, 3], 5, 0xabcd).unwrap();
        assert_eq!(f.frame(), Some(&[1u8, 2, 3][..]));
        assert!(FrameSlot::new(&[0; FRAME_SLOT_DATA], 0, 0).is_some());
        assert!(FrameSlot::new(&[0; FRAME_SLOT_DATA + 1], 0, 0).is_none());
        let mut bad = f;
        bad.len = FRAME_SLOT_DATA as u32 + 1;
        assert_eq!(bad.frame(), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: if cfg!(miri) { 8 } else { 1024 }, ..ProptestConfig::default() })]

        /// Any slot either fails to decode or decodes to a message that re-encodes to the
        /// very same slot (decode accepts nothing it would not have produced).
        #[test]
        fn decode_accepts_only_canonical_slots(
            opcode in 0u32..14, args in any::<[u32; 3]>(), small in any::<[u8; 3]>(),
            wide in any::<u64>(), use_small in any::<bool>(), reserved_zero in any::<bool>(),
        ) {
            let args = if use_small { [u32::from(small[0]), u32::from(small[1] % 8), 0] } else { args };
            let reserved = if reserved_zero { [0; 5] } else { [wide; 5] };
            let slot = ControlSlot { opcode, args, wide, reserved };
            if let Ok(m) = ControlMessage::decode(&slot, &layout()) {
                prop_assert_eq!(m.encode(), slot);
            }
        }
    }
}
