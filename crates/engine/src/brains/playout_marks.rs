//! The external brain's marks in playout order, each with the samples of the clip it closes
//! (a `PlayAudio` clip, or a `SpeakText` line's synthesised chunks), so that a mark is reported
//! with how much of its clip was heard: all of it once played, the part before a cut when the
//! playout is cleared. [`heard_parts`] splits a cut's dropped samples over queued pieces, for
//! this and for `builtin:agent`'s own segments.

use std::collections::VecDeque;

use dialtone_speech::SAMPLE_RATE;

/// Samples of each piece queued in the playout, in order, that were played when a cut dropped
/// `dropped` samples from the end of them (the unplayed samples of the piece under way and of
/// every piece after it).
pub(super) fn heard_parts(
    lengths: impl IntoIterator<Item = usize> + Clone,
    dropped: usize,
) -> impl Iterator<Item = usize> {
    let queued: usize = lengths.clone().into_iter().sum();
    let mut played = queued.saturating_sub(dropped);
    lengths.into_iter().map(move |samples| {
        let heard = played.min(samples);
        played -= heard;
        heard
    })
}

/// A mark reported to the brain: the clip it closes was played to its end, or cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MarkReport {
    pub(super) mark: String,
    pub(super) interrupted: bool,
    pub(super) played_ms: u32,
}

/// A clip in the playout: its samples, and the brain's mark that closes it (`None`: unmarked,
/// or marked by the engine only).
#[derive(Debug)]
struct Clip {
    mark: Option<String>,
    samples: usize,
    /// A `SpeakText` line still being synthesised: more chunks join it, then its mark.
    open: bool,
}

/// The brain's clips in the playout, in order.
#[derive(Debug, Default)]
pub(super) struct PlayoutMarks {
    clips: VecDeque<Clip>,
}

impl PlayoutMarks {
    /// A `PlayAudio` clip of `samples` (16 kHz) was queued, closed by `mark`.
    pub(super) fn clip(&mut self, samples: usize, mark: Option<String>) {
        self.clips.push_back(Clip {
            mark,
            samples,
            open: false,
        });
    }

    /// A chunk of `samples` of the line under synthesis was queued.
    pub(super) fn speech(&mut self, samples: usize) {
        match self.clips.back_mut() {
            Some(clip) if clip.open => clip.samples += samples,
            _ => self.clips.push_back(Clip {
                mark: None,
                samples,
                open: true,
            }),
        }
    }

    /// The line under synthesis ended, closed by the brain's `mark` (`None`: unmarked).
    pub(super) fn speech_ended(&mut self, mark: Option<String>) {
        match self.clips.back_mut() {
            Some(clip) if clip.open => {
                clip.open = false;
                clip.mark = mark;
            }
            _ => self.clip(0, mark),
        }
    }

    /// The playout reports `mark` done: its clip and every clip before it have played. The
    /// report, when `mark` is the brain's.
    pub(super) fn played(&mut self, mark: &str) -> Option<MarkReport> {
        let at = self
            .clips
            .iter()
            .position(|c| !c.open && c.mark.as_deref() == Some(mark))?;
        let clip = self.clips.drain(..=at).next_back()?;
        Some(MarkReport {
            mark: clip.mark?,
            interrupted: false,
            played_ms: to_ms(clip.samples),
        })
    }

    /// The playout was cleared, `dropped` samples of it unplayed, and the line under
    /// synthesis (closed by `open_mark`) stopped: every mark still pending is reported, in
    /// order, interrupted with what of its clip was heard; a clip heard to its end before the
    /// cut (its own report still on its way) is reported played, and its report later ignored.
    pub(super) fn cut(&mut self, dropped: usize, open_mark: Option<&str>) -> Vec<MarkReport> {
        let lengths: Vec<usize> = self.clips.iter().map(|c| c.samples).collect();
        let mut cut_yet = false;
        self.clips
            .drain(..)
            .zip(heard_parts(lengths, dropped))
            .filter_map(|(clip, heard)| {
                cut_yet |= clip.open || heard < clip.samples;
                let mark = match clip.open {
                    true => open_mark.map(str::to_owned),
                    false => clip.mark,
                }?;
                Some(MarkReport {
                    mark,
                    interrupted: cut_yet,
                    played_ms: to_ms(heard),
                })
            })
            .collect()
    }
}

/// Milliseconds of `samples` at the speech loop's rate.
fn to_ms(samples: usize) -> u32 {
    (samples * 1000 / SAMPLE_RATE as usize) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(mark: &str, interrupted: bool, played_ms: u32) -> MarkReport {
        MarkReport {
            mark: mark.into(),
            interrupted,
            played_ms,
        }
    }

    #[test]
    fn a_cut_splits_its_dropped_samples_from_the_end_of_the_pieces() {
        let heard: Vec<usize> = heard_parts([100, 50, 200], 230).collect();
        assert_eq!(heard, [100, 20, 0]);
        let heard: Vec<usize> = heard_parts([100, 50], 0).collect();
        assert_eq!(heard, [100, 50]);
        let heard: Vec<usize> = heard_parts([100, 50], 500).collect();
        assert_eq!(heard, [0, 0]);
    }

    #[test]
    fn a_clip_played_to_its_end_reports_its_whole_length() {
        let mut marks = PlayoutMarks::default();
        marks.clip(16_000, Some("one".into()));
        marks.clip(8_000, Some("two".into()));
        assert_eq!(marks.played("one"), Some(report("one", false, 1000)));
        assert_eq!(marks.played("two"), Some(report("two", false, 500)));
        assert_eq!(marks.cut(0, None), []);
    }

    #[test]
    fn a_line_reports_the_sum_of_its_chunks() {
        let mut marks = PlayoutMarks::default();
        marks.speech(3_200);
        marks.speech(4_800);
        marks.speech_ended(Some("line".into()));
        assert_eq!(marks.played("line"), Some(report("line", false, 500)));
    }

    #[test]
    fn marks_the_engine_keeps_to_itself_are_not_reported() {
        let mut marks = PlayoutMarks::default();
        marks.speech(1_600);
        marks.speech_ended(None);
        marks.clip(1_600, Some("brain".into()));
        assert_eq!(marks.played("\u{0}internal"), None);
        assert_eq!(marks.played("apology"), None);
        assert_eq!(marks.played("brain"), Some(report("brain", false, 100)));
    }

    #[test]
    fn a_cut_reports_every_pending_mark_interrupted_with_what_of_it_was_heard() {
        let mut marks = PlayoutMarks::default();
        marks.clip(1_600, None);
        marks.speech(3_200);
        marks.speech(3_200);
        marks.speech_ended(Some("line".into()));
        marks.clip(8_000, Some("clip".into()));
        // 100 ms of the unmarked clip and 250 ms of the line were played.
        let reports = marks.cut(2_400 + 8_000, None);
        assert_eq!(
            reports,
            [report("line", true, 250), report("clip", true, 0)]
        );
        assert_eq!(marks.cut(0, None), [], "the cut emptied the queue");
    }

    #[test]
    fn a_cut_while_a_line_is_synthesised_reports_its_mark() {
        let mut marks = PlayoutMarks::default();
        marks.clip(1_600, None);
        marks.speech(3_200);
        marks.speech(1_600);
        let reports = marks.cut(4_800 - 800, Some("line"));
        assert_eq!(reports, [report("line", true, 50)]);
        marks.speech(1_600);
        marks.speech_ended(None);
        assert_eq!(marks.cut(1_600, Some("next")), [], "an unmarked line");
    }

    #[test]
    fn a_clip_heard_to_its_end_before_the_cut_is_reported_played_once() {
        let mut marks = PlayoutMarks::default();
        marks.clip(1_600, Some("clip".into()));
        marks.clip(1_600, Some("next".into()));
        marks.speech_ended(Some("after".into()));
        // "clip" finished, its report still queued, when the cut came 40 ms into "next".
        assert_eq!(
            marks.cut(1_600 - 640, None),
            [
                report("clip", false, 100),
                report("next", true, 40),
                report("after", true, 0)
            ]
        );
        assert_eq!(marks.played("clip"), None, "reported already");
    }

    #[test]
    fn a_line_whose_audio_had_all_played_when_its_synthesis_was_stopped_is_interrupted() {
        let mut marks = PlayoutMarks::default();
        marks.speech(1_600);
        assert_eq!(marks.cut(0, Some("line")), [report("line", true, 100)]);
    }

    #[test]
    fn a_mark_queued_after_audio_that_has_played_is_reported_played_by_a_cut() {
        let mut marks = PlayoutMarks::default();
        marks.speech(1_600);
        marks.speech_ended(Some("line".into()));
        assert_eq!(marks.cut(0, None), [report("line", false, 100)]);
    }
}
