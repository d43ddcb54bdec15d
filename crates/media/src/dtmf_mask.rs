//! Masking in-band DTMF (key tones inside the caller's audio) out of a recording, on the
//! recording writer's side.
//!
//! The detector is the speech loop's ([`dialtone_speech::InbandDtmf`]), fed the same 16 kHz
//! caller frames, so the digits silenced are the ones the transcript masks. A digit is only
//! known once its tone has lasted [`InbandDtmf::CONFIRM_FRAMES`] frames, so the frames wait in
//! a short delay line (one more than that: the frame before the tone, which may hold its
//! onset): on confirmation the tone's frames still in the line are silenced, and so is every
//! frame while the tone lasts, plus one after it (its tail). This runs on the writer thread,
//! not the media worker: the worker does no filtering for it, and the delay costs the
//! recording nothing (it is written later anyway). Both channels of a masked frame are
//! silenced, as for RFC 4733 events.

use std::collections::VecDeque;

use dialtone_speech::InbandDtmf;

use crate::pipeline::SPEECH_RATE;
use crate::recording::StereoFrame;

/// Frames held back: the confirmed tone's frames and the one before them.
const DELAY_FRAMES: usize = InbandDtmf::CONFIRM_FRAMES as usize + 1;

/// One recording's mask: the detector and the delay line.
#[derive(Debug, Default)]
pub(crate) struct InbandMask {
    detector: InbandDtmf,
    /// Frames held back, each with whether it is to be silenced.
    line: VecDeque<(StereoFrame, bool)>,
    /// A confirmed tone is going on: its frames are silenced as they come.
    masking: bool,
}

impl InbandMask {
    /// Takes the next frame; gives back the frame leaving the delay line, if one does.
    pub(crate) fn push(&mut self, frame: StereoFrame) -> Option<StereoFrame> {
        let confirmed = self.detector.frame(&frame.caller, SPEECH_RATE).is_some();
        let tone = self.detector.hearing_tone();
        // The tail: the first frame after a masked tone may still hold its end.
        let silenced = self.masking || confirmed;
        self.masking = (self.masking && tone) || confirmed;
        self.line.push_back((frame, silenced));
        if confirmed {
            // The tone's frames so far, and the one before them.
            let back = self.detector.tone_frames() as usize + 1;
            for (_, masked) in self.line.iter_mut().rev().take(back) {
                *masked = true;
            }
        }
        (self.line.len() > DELAY_FRAMES)
            .then(|| self.line.pop_front())
            .flatten()
            .map(silence)
    }

    /// The frames still held back, at the recording's end.
    pub(crate) fn flush(&mut self) -> impl Iterator<Item = StereoFrame> + '_ {
        self.line.drain(..).map(silence)
    }
}

fn silence((frame, masked): (StereoFrame, bool)) -> StereoFrame {
    match masked {
        true => StereoFrame::SILENCE,
        false => frame,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FRAME_SAMPLES;
    use dialtone_test_support::audio::{dtmf, sine};

    /// Frame `index` of a 1000 Hz tone (caller) under 700 Hz (agent).
    fn talk(index: usize) -> StereoFrame {
        let mut frame = StereoFrame::SILENCE;
        sine(
            16000,
            1000.0,
            8000.0,
            index * FRAME_SAMPLES,
            &mut frame.caller,
        );
        sine(
            16000,
            700.0,
            8000.0,
            index * FRAME_SAMPLES,
            &mut frame.agent,
        );
        frame
    }

    /// `talk`, the caller's side replaced by a key's tone.
    fn key(index: usize) -> StereoFrame {
        let mut frame = talk(index);
        dtmf(16000, '5', 4000.0, &mut frame.caller);
        frame
    }

    fn silent(frame: &StereoFrame) -> bool {
        frame.caller.iter().chain(&frame.agent).all(|s| *s == 0)
    }

    #[test]
    fn a_confirmed_key_is_silenced_from_the_frame_before_it_to_the_one_after() {
        let mut mask = InbandMask::default();
        let frames: Vec<StereoFrame> = (0..20)
            .map(|i| {
                if (8..12).contains(&i) {
                    key(i)
                } else {
                    talk(i)
                }
            })
            .collect();
        let mut out: Vec<StereoFrame> = frames.iter().filter_map(|f| mask.push(*f)).collect();
        assert_eq!(out.len(), 20 - DELAY_FRAMES, "held back by the delay line");
        out.extend(mask.flush());
        assert_eq!(out.len(), 20);
        let masked: Vec<usize> = (0..20).filter(|i| silent(&out[*i])).collect();
        assert_eq!(masked, (7..=12).collect::<Vec<_>>());
        for i in (0..7).chain(13..20) {
            assert_eq!(out[i].caller, frames[i].caller, "frame {i} as it was");
            assert_eq!(out[i].agent, frames[i].agent, "frame {i} as it was");
        }
    }

    #[test]
    fn a_tone_too_short_to_be_a_key_is_kept() {
        let mut mask = InbandMask::default();
        let frames: Vec<StereoFrame> = (0..10)
            .map(|i| if i == 4 { key(i) } else { talk(i) })
            .collect();
        let mut out: Vec<StereoFrame> = frames.iter().filter_map(|f| mask.push(*f)).collect();
        out.extend(mask.flush());
        assert!(out.iter().all(|f| !silent(f)));
        assert_eq!(out[4].caller, frames[4].caller);
    }
}
