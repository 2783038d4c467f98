//! The connection's queue of events for the application, kept inline in the control block.
//!
//! Events are edge-triggered notices ("something changed, look again"), so one that is
//! already waiting is not queued a second time: the queue keeps the order in which kinds
//! first occurred and holds at most one of each. With eight kinds (four close reasons),
//! the whole queue fits in one `u32` of 4-bit codes and a connection allocates nothing for
//! its events.

use super::{CloseReason, ConnectionEvent};

/// Bits per queued code; code 0 marks the end of the queue.
const CODE_BITS: u32 = 4;
const CODE_MASK: u32 = (1 << CODE_BITS) - 1;

/// Waiting events, oldest in the low bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct EventQueue {
    codes: u32,
}

fn code(event: ConnectionEvent) -> u32 {
    match event {
        ConnectionEvent::Established => 1,
        ConnectionEvent::Readable => 2,
        ConnectionEvent::Writable => 3,
        ConnectionEvent::ReadClosed => 4,
        ConnectionEvent::Closed(CloseReason::Normal) => 5,
        ConnectionEvent::Closed(CloseReason::Reset) => 6,
        ConnectionEvent::Closed(CloseReason::TimedOut) => 7,
        ConnectionEvent::Closed(CloseReason::Aborted) => 8,
    }
}

fn event(code: u32) -> Option<ConnectionEvent> {
    Some(match code {
        1 => ConnectionEvent::Established,
        2 => ConnectionEvent::Readable,
        3 => ConnectionEvent::Writable,
        4 => ConnectionEvent::ReadClosed,
        5 => ConnectionEvent::Closed(CloseReason::Normal),
        6 => ConnectionEvent::Closed(CloseReason::Reset),
        7 => ConnectionEvent::Closed(CloseReason::TimedOut),
        8 => ConnectionEvent::Closed(CloseReason::Aborted),
        _ => return None,
    })
}

impl EventQueue {
    /// Queues `event` unless the same event is already waiting.
    pub(crate) fn push(&mut self, event: ConnectionEvent) {
        let code = code(event);
        let mut shift = 0;
        while shift < u32::BITS {
            match (self.codes >> shift) & CODE_MASK {
                0 => {
                    self.codes |= code << shift;
                    return;
                }
                waiting if waiting == code => return,
                _ => shift += CODE_BITS,
            }
        }
        // Unreachable: eight distinct codes fill the word exactly and a ninth cannot exist.
    }

    /// True when no event waits.
    pub(crate) fn is_empty(self) -> bool {
        self.codes == 0
    }

    /// The oldest waiting event.
    pub(crate) fn pop(&mut self) -> Option<ConnectionEvent> {
        let first = event(self.codes & CODE_MASK)?;
        self.codes >>= CODE_BITS;
        Some(first)
    }

    /// The waiting events, oldest first, without taking them.
    pub(crate) fn iter(self) -> impl Iterator<Item = ConnectionEvent> {
        let mut rest = self;
        core::iter::from_fn(move || rest.pop())
    }
}

impl FromIterator<ConnectionEvent> for EventQueue {
    fn from_iter<I: IntoIterator<Item = ConnectionEvent>>(events: I) -> Self {
        let mut queue = EventQueue::default();
        for e in events {
            queue.push(e);
        }
        queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const ALL: [ConnectionEvent; 8] = [
        ConnectionEvent::Established,
        ConnectionEvent::Readable,
        ConnectionEvent::Writable,
        ConnectionEvent::ReadClosed,
        ConnectionEvent::Closed(CloseReason::Normal),
        ConnectionEvent::Closed(CloseReason::Reset),
        ConnectionEvent::Closed(CloseReason::TimedOut),
        ConnectionEvent::Closed(CloseReason::Aborted),
    ];

    #[test]
    fn events_come_out_in_order_of_first_occurrence() {
        let mut q = EventQueue::default();
        for e in [
            ConnectionEvent::Readable,
            ConnectionEvent::Writable,
            ConnectionEvent::Readable,
            ConnectionEvent::ReadClosed,
        ] {
            q.push(e);
        }
        let drained: Vec<_> = core::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            drained,
            [ConnectionEvent::Readable, ConnectionEvent::Writable, ConnectionEvent::ReadClosed]
        );
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn an_event_polled_can_be_queued_again() {
        let mut q = EventQueue::default();
        q.push(ConnectionEvent::Readable);
        assert_eq!(q.pop(), Some(ConnectionEvent::Readable));
        q.push(ConnectionEvent::Readable);
        assert_eq!(q.pop(), Some(ConnectionEvent::Readable));
    }

    #[test]
    fn every_kind_fits_at_once_and_round_trips() {
        let q: EventQueue = ALL.iter().rev().copied().collect();
        let mut expected = ALL;
        expected.reverse();
        assert_eq!(q.iter().collect::<Vec<_>>(), expected);
    }
}
