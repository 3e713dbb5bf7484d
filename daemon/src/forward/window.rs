//! The at-least-once window: which sent events are acknowledged, and how far the cursor may
//! move. The cursor moves only over a contiguous prefix of acknowledged (or set-aside)
//! events, so a crash or a reconnect resends exactly what the broker has not acknowledged.

use std::collections::{HashMap, VecDeque};

use tokio::time::Instant;

/// One sent event.
#[derive(Debug, Clone, Copy)]
struct Sent {
    seq: u64,
    acked: bool,
    at: Instant,
    /// When rumqttc wrote it to the socket (its pkid became known).
    written: Option<Instant>,
}

/// What is in flight on the current connection.
#[derive(Debug)]
pub struct Window {
    /// Highest seq such that it and everything sent before it is acknowledged.
    cursor: u64,
    /// The cursor as last written to the log.
    persisted: u64,
    /// Sent seqs in send order (strictly increasing).
    sent: VecDeque<Sent>,
    /// Seqs handed to rumqttc whose pkid is not known yet (FIFO: rumqttc keeps order).
    awaiting_pkid: VecDeque<u64>,
    inflight: HashMap<u16, u64>,
    /// A publish rumqttc held back because its pkid was still in use.
    collided: Option<(u16, u64)>,
}

impl Window {
    pub fn new(cursor: u64) -> Window {
        Window {
            cursor,
            persisted: cursor,
            sent: VecDeque::new(),
            awaiting_pkid: VecDeque::new(),
            inflight: HashMap::new(),
            collided: None,
        }
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The next seq to read: past everything sent on this connection.
    pub fn next_seq(&self) -> u64 {
        self.sent.back().map_or(self.cursor, |s| s.seq) + 1
    }

    /// Forgets everything in flight (the connection is gone); resend starts after the cursor.
    pub fn reset(&mut self) {
        self.sent.clear();
        self.awaiting_pkid.clear();
        self.inflight.clear();
        self.collided = None;
    }

    /// Sent and not yet acknowledged (or set aside), the window's size.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }

    /// When the oldest unacknowledged publish was sent, and its seq.
    pub fn oldest_unacked(&self) -> Option<(u64, Instant)> {
        self.sent.front().map(|s| (s.seq, s.at))
    }

    /// The oldest unacknowledged publish if rumqttc has written it, and when.
    pub fn oldest_written(&self) -> Option<(u64, Instant)> {
        let front = self.sent.front()?;
        Some((front.seq, front.written?))
    }

    /// `seq` was handed to rumqttc.
    pub fn published(&mut self, seq: u64, at: Instant) {
        self.push(seq, false, at);
        self.awaiting_pkid.push_back(seq);
    }

    /// `seq` is set aside (never sent): the cursor may pass it like an acknowledged one.
    pub fn skipped(&mut self, seq: u64, at: Instant) {
        self.push(seq, true, at);
        self.advance();
    }

    fn push(&mut self, seq: u64, acked: bool, at: Instant) {
        assert!(
            seq >= self.next_seq(),
            "seq {seq} sent out of order (next is {})",
            self.next_seq()
        );
        self.sent.push_back(Sent {
            seq,
            acked,
            at,
            written: None,
        });
    }

    /// rumqttc wrote a PUBLISH with `pkid` (`Outgoing::Publish`, in publish order).
    pub fn pkid_assigned(&mut self, pkid: u16) {
        let seq = match self.collided {
            Some((held, seq)) if held == pkid => {
                self.collided = None;
                Some(seq)
            }
            _ => self.awaiting_pkid.pop_front(),
        };
        if let Some(seq) = seq {
            let previous = self.inflight.insert(pkid, seq);
            debug_assert!(previous.is_none(), "pkid {pkid} reused while in flight");
            if let Some(entry) = self.sent.iter_mut().find(|s| s.seq == seq) {
                entry.written = Some(Instant::now());
            }
        }
    }

    /// rumqttc held a publish back because `pkid` is still in flight (`Outgoing::AwaitAck`).
    pub fn pkid_collided(&mut self, pkid: u16) {
        if let Some(seq) = self.awaiting_pkid.pop_front() {
            self.collided = Some((pkid, seq));
        }
    }

    /// A PUBACK for `pkid`; returns whether the cursor moved.
    pub fn puback(&mut self, pkid: u16) -> bool {
        let Some(seq) = self.inflight.remove(&pkid) else {
            return false;
        };
        let entry = self.sent.iter_mut().find(|s| s.seq == seq);
        let entry = entry.expect("an in-flight seq is in the sent window");
        entry.acked = true;
        let before = self.cursor;
        self.advance();
        self.cursor != before
    }

    fn advance(&mut self) {
        while let Some(&Sent {
            seq, acked: true, ..
        }) = self.sent.front()
        {
            assert!(
                seq > self.cursor,
                "cursor {} would move back to {seq}",
                self.cursor
            );
            self.cursor = seq;
            self.sent.pop_front();
        }
    }

    /// The cursor to persist, if it moved since the last [`Window::persisted`].
    pub fn to_persist(&self) -> Option<u64> {
        (self.cursor != self.persisted).then_some(self.cursor)
    }

    pub fn persisted(&mut self, cursor: u64) {
        assert!(cursor >= self.persisted, "persisted cursor moved back");
        self.persisted = cursor;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Instant {
        Instant::now()
    }

    #[test]
    fn cursor_moves_only_over_a_contiguous_acked_prefix() {
        let mut w = Window::new(10);
        for (seq, pkid) in [(11, 1), (12, 2), (13, 3)] {
            w.published(seq, now());
            w.pkid_assigned(pkid);
        }
        assert!(!w.puback(2), "12 acked before 11: cursor stays");
        assert_eq!(w.cursor(), 10);
        assert!(w.puback(1));
        assert_eq!(w.cursor(), 12);
        assert!(w.puback(3));
        assert_eq!(w.cursor(), 13);
        assert_eq!(w.in_flight(), 0);
        assert_eq!(w.next_seq(), 14);
    }

    #[test]
    fn reset_resends_from_the_cursor_and_ignores_stale_pubacks() {
        let mut w = Window::new(0);
        w.published(1, now());
        w.pkid_assigned(1);
        w.published(2, now());
        w.pkid_assigned(2);
        assert!(w.puback(1));
        w.reset();
        assert_eq!(w.next_seq(), 2, "2 was never acknowledged");
        assert!(
            !w.puback(2),
            "a PUBACK from the old connection moves nothing"
        );
        assert_eq!(w.cursor(), 1);
    }

    #[test]
    fn a_skipped_event_lets_the_cursor_pass_once_everything_before_is_acked() {
        let mut w = Window::new(0);
        w.published(1, now());
        w.pkid_assigned(7);
        w.skipped(2, now());
        assert_eq!(w.cursor(), 0);
        assert!(w.puback(7));
        assert_eq!(w.cursor(), 2);
        w.skipped(3, now());
        assert_eq!(w.cursor(), 3);
    }

    #[test]
    fn a_collided_publish_gets_its_pkid_when_it_is_finally_written() {
        let mut w = Window::new(0);
        w.published(1, now());
        w.pkid_assigned(1);
        w.published(2, now());
        w.pkid_collided(1);
        assert!(w.puback(1));
        w.pkid_assigned(1);
        assert!(w.puback(1));
        assert_eq!(w.cursor(), 2);
    }

    #[test]
    fn persisting_tracks_the_cursor() {
        let mut w = Window::new(5);
        assert_eq!(w.to_persist(), None);
        w.skipped(6, now());
        assert_eq!(w.to_persist(), Some(6));
        w.persisted(6);
        assert_eq!(w.to_persist(), None);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn sending_out_of_order_is_a_bug() {
        let mut w = Window::new(5);
        w.published(7, now());
        w.published(6, now());
    }
}
