//! The packet index and the replay window (RFC 3711 §3.3.1, §3.3.2, Appendix A).

/// Packets the replay window remembers behind the highest index.
pub(super) const WINDOW: u64 = 64;

/// Which indexes of a stream were received, up to [`WINDOW`] behind the highest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct ReplayWindow {
    /// The highest index received, if any was.
    highest: Option<u64>,
    /// Bit `n`: index `highest - n` was received.
    seen: u64,
}

impl ReplayWindow {
    /// Whether `index` is new: above the highest, or within the window and not received.
    pub(super) fn is_fresh(&self, index: u64) -> bool {
        match self.highest {
            None => true,
            Some(h) if index > h => true,
            Some(h) => {
                let behind = h - index;
                behind < WINDOW && self.seen & (1 << behind) == 0
            }
        }
    }

    /// Marks `index` received (only once its packet authenticated).
    pub(super) fn accept(&mut self, index: u64) {
        match self.highest {
            Some(h) if index <= h => {
                let behind = h - index;
                if behind < WINDOW {
                    self.seen |= 1 << behind;
                }
            }
            Some(h) => {
                let ahead = index - h;
                self.seen = if ahead >= WINDOW {
                    0
                } else {
                    self.seen << ahead
                };
                self.seen |= 1;
                self.highest = Some(index);
            }
            None => {
                self.seen = 1;
                self.highest = Some(index);
            }
        }
    }
}

/// One SRTP stream's place: its rollover counter and highest sequence number (s_l), and
/// its replay window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamIndex {
    roc: u32,
    highest_sequence: u16,
    pub(super) replay: ReplayWindow,
}

impl StreamIndex {
    /// A stream whose first packet has sequence number `sequence` (rollover counter 0).
    pub(super) fn starting_at(sequence: u16) -> Self {
        Self {
            roc: 0,
            highest_sequence: sequence,
            replay: ReplayWindow::default(),
        }
    }

    /// The rollover counter the packet with `sequence` was most likely sent with (Appendix
    /// A); `None` for a packet from before the stream's first (its counter would be -1).
    pub(super) fn estimate(&self, sequence: u16) -> Option<u32> {
        let s_l = self.highest_sequence;
        if s_l < 0x8000 {
            if sequence > s_l && sequence - s_l > 0x8000 {
                self.roc.checked_sub(1)
            } else {
                Some(self.roc)
            }
        } else if s_l - 0x8000 > sequence {
            // Past 2^32 rollovers the index space is spent; protecting refuses before that.
            self.roc.checked_add(1)
        } else {
            Some(self.roc)
        }
    }

    /// Moves the stream on for an authenticated packet with `sequence` sent under `roc`.
    pub(super) fn update(&mut self, roc: u32, sequence: u16) {
        if roc > self.roc {
            self.roc = roc;
            self.highest_sequence = sequence;
        } else if roc == self.roc && sequence > self.highest_sequence {
            self.highest_sequence = sequence;
        }
        self.replay.accept(index(roc, sequence));
    }
}

/// The 48-bit packet index.
pub(super) fn index(roc: u32, sequence: u16) -> u64 {
    u64::from(roc) << 16 | u64::from(sequence)
}
