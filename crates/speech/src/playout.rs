//! The queue of agent audio: segments of 16 kHz PCM, each with an optional mark the brain named.
//! One 20 ms frame leaves per tick; a segment whose last sample leaves reports its mark as done.
//! Clearing (barge-in, or the brain asking) reports how much of the segment under way was heard.

use std::collections::VecDeque;

use crate::FRAME_SAMPLES;

#[derive(Debug)]
struct Segment {
    samples: Vec<i16>,
    played: usize,
    mark: Option<String>,
}

/// What was heard of the playout when it was cleared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The mark of the segment under way.
    pub mark: Option<String>,
    /// Samples of it that were played.
    pub played_samples: usize,
    /// Samples of it and of the segments after it that were dropped.
    pub dropped_samples: usize,
}

/// The playout queue.
#[derive(Debug, Default)]
pub struct Playout {
    segments: VecDeque<Segment>,
    /// Samples queued and not yet played.
    queued: usize,
}

impl Playout {
    /// Queues `samples` (16 kHz), reporting `mark` when its last sample has been played.
    pub fn push(&mut self, samples: Vec<i16>, mark: Option<String>) {
        self.queued += samples.len();
        self.segments.push_back(Segment {
            samples,
            played: 0,
            mark,
        });
    }

    /// Samples (16 kHz) queued and not yet played.
    pub fn queued_samples(&self) -> usize {
        self.queued
    }

    /// Whether anything is queued (audio, or a mark still to report).
    pub fn is_playing(&self) -> bool {
        !self.segments.is_empty()
    }

    /// Fills `out` with the next frame (silence past the end) and returns the marks of the
    /// segments that finished in it.
    pub fn next_frame(&mut self, out: &mut [i16; FRAME_SAMPLES], done: &mut Vec<Option<String>>) {
        let mut filled = 0;
        while filled < FRAME_SAMPLES {
            let Some(segment) = self.segments.front_mut() else {
                break;
            };
            let rest = segment.samples.get(segment.played..).unwrap_or_default();
            let n = rest.len().min(FRAME_SAMPLES - filled);
            if let (Some(dst), Some(src)) = (out.get_mut(filled..filled + n), rest.get(..n)) {
                dst.copy_from_slice(src);
            }
            filled += n;
            segment.played += n;
            self.queued = self.queued.saturating_sub(n);
            if segment.played >= segment.samples.len()
                && let Some(finished) = self.segments.pop_front()
            {
                done.push(finished.mark);
            }
        }
        // Marks queued right after the audio that just ended (empty segments) finish with it.
        while self
            .segments
            .front()
            .is_some_and(|s| s.played >= s.samples.len())
        {
            if let Some(finished) = self.segments.pop_front() {
                done.push(finished.mark);
            }
        }
        if let Some(rest) = out.get_mut(filled..) {
            rest.fill(0);
        }
    }

    /// Drops everything queued; `None` when nothing was playing.
    pub fn clear(&mut self) -> Option<Cut> {
        let first = self.segments.front()?;
        let cut = Cut {
            mark: first.mark.clone(),
            played_samples: first.played,
            dropped_samples: self
                .segments
                .iter()
                .map(|s| s.samples.len() - s.played)
                .sum(),
        };
        self.segments.clear();
        self.queued = 0;
        Some(cut)
    }
}
