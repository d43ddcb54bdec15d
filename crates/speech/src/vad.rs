//! Voice activity per 20 ms frame: earshot's neural detector on 256-sample (16 ms) chunks,
//! gated by energy above an adaptive noise floor so steady background noise and line hum do not
//! count as speech however the network scores them. The floor is the quietest frame of the last
//! second (minimum statistics): speech always dips between syllables, steady noise never rises
//! above itself, and a stream that starts with noise is judged against that noise at once.
//!
//! The gate also saves the network's work: once a stream has stayed under it for
//! [`QUIET_BEFORE_IDLE`] frames (a pause, not a dip between syllables), earshot is reset and
//! not run again until a frame rises above the gate, so the next utterance is scored from a
//! fresh state, as at the start of a stream. A caller listening to the agent costs a level
//! measurement per frame instead of a network evaluation per 16 ms.

use std::collections::VecDeque;

/// Samples earshot scores at a time.
const CHUNK: usize = 256;

/// Frames under the gate after which earshot idles (200 ms).
pub const QUIET_BEFORE_IDLE: u32 = 10;

/// Samples of the pause earshot hears again when it wakes (the last 160 ms).
const PREROLL: usize = 10 * CHUNK;

/// What one frame was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameVoice {
    /// Whether the frame counts as speech.
    pub voiced: bool,
    /// The highest earshot score of the chunks the frame completed (0–1); 0 while earshot
    /// idles in a pause.
    pub score: f32,
    /// The frame's level, dBFS RMS.
    pub level_dbfs: f32,
    /// The noise floor after this frame, dBFS.
    pub noise_floor_dbfs: f32,
}

/// The detector of one audio stream.
pub struct VoiceDetector {
    earshot: Box<earshot::Detector>,
    /// Samples not yet in a whole chunk (fewer than [`CHUNK`] between frames).
    pending: Vec<i16>,
    last_score: f32,
    levels: VecDeque<f32>,
    noise_floor: f32,
    threshold: f32,
    margin_db: f32,
    /// Consecutive frames under the gate.
    quiet_frames: u32,
    /// Frames under the gate after which earshot idles.
    idle_after: u32,
    /// While idle, the last [`PREROLL`] samples, for earshot's context when the gate opens.
    preroll: VecDeque<i16>,
}

/// Frames the noise floor looks back over (one second).
const FLOOR_WINDOW: usize = 50;

impl std::fmt::Debug for VoiceDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VoiceDetector")
            .field("noise_floor", &self.noise_floor)
            .field("threshold", &self.threshold)
            .finish_non_exhaustive()
    }
}

/// RMS level of samples in dBFS (-100 for digital silence).
pub fn level_dbfs(samples: &[i16]) -> f32 {
    dialtone_codec::level_dbfs(samples) as f32
}

impl VoiceDetector {
    /// A detector calling a frame speech when earshot scores it above `threshold` and its
    /// level is `margin_db` above the noise floor.
    pub fn new(threshold: f32, margin_db: f32) -> Self {
        Self {
            earshot: Box::new(earshot::Detector::default()),
            pending: Vec::with_capacity(PREROLL + 2 * CHUNK),
            last_score: 0.0,
            levels: VecDeque::with_capacity(FLOOR_WINDOW),
            noise_floor: -100.0,
            threshold,
            margin_db,
            quiet_frames: 0,
            idle_after: QUIET_BEFORE_IDLE,
            preroll: VecDeque::with_capacity(PREROLL + 320),
        }
    }

    /// Scores one frame of 16 kHz audio.
    pub fn frame(&mut self, frame: &[i16]) -> FrameVoice {
        let level = level_dbfs(frame);
        if self.levels.len() == FLOOR_WINDOW {
            self.levels.pop_front();
        }
        self.levels.push_back(level);
        self.noise_floor = self.levels.iter().copied().fold(f32::INFINITY, f32::min);
        let above_gate = level >= self.noise_floor + self.margin_db;
        let was_idle = self.quiet_frames > self.idle_after;
        self.quiet_frames = if above_gate {
            0
        } else {
            self.quiet_frames.saturating_add(1)
        };
        let score = if self.quiet_frames > self.idle_after {
            if !was_idle {
                self.earshot.reset();
                self.pending.clear();
            }
            self.preroll.extend(frame.iter().copied());
            let excess = self.preroll.len().saturating_sub(PREROLL);
            self.preroll.drain(..excess);
            0.0
        } else {
            if was_idle {
                // Waking: the pause's last samples give earshot the state it would have had.
                let mut preroll = std::mem::take(&mut self.preroll);
                self.score(preroll.make_contiguous());
                preroll.clear();
                self.preroll = preroll;
            }
            self.score(frame)
        };
        self.last_score = score;
        FrameVoice {
            voiced: score >= self.threshold && above_gate,
            score,
            level_dbfs: level,
            noise_floor_dbfs: self.noise_floor,
        }
    }

    /// Runs earshot over the chunks `frame` completes; a frame that completes none keeps the
    /// last score (chunks straddle frames).
    fn score(&mut self, frame: &[i16]) -> f32 {
        self.pending.extend_from_slice(frame);
        let mut score: Option<f32> = None;
        let mut scored = 0;
        while let Some(chunk) = self.pending.get(scored..scored + CHUNK) {
            let s = self.earshot.predict_i16(chunk).clamp(0.0, 1.0);
            score = Some(score.map_or(s, |m| m.max(s)));
            scored += CHUNK;
        }
        self.pending.drain(..scored);
        score.unwrap_or(self.last_score)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voice(n: usize) -> i16 {
        let t = n as f64 / 16000.0;
        let tau = std::f64::consts::TAU;
        let envelope = 0.55 + 0.45 * (tau * 4.0 * t).sin();
        (9000.0 * envelope * ((tau * 140.0 * t).sin() + 0.4 * (tau * 280.0 * t).sin())) as i16
    }

    /// Frames 0.. of `talk` ms of voice, then `pause` ms of silence, `rounds` times; the
    /// verdicts per frame.
    fn verdicts(
        detector: &mut VoiceDetector,
        talk: usize,
        pause: usize,
        rounds: usize,
    ) -> Vec<bool> {
        let mut out = Vec::new();
        let mut n = 0;
        for _ in 0..rounds {
            for f in 0..(talk + pause) / 20 {
                let mut frame = [0i16; 320];
                if f < talk / 20 {
                    for s in frame.iter_mut() {
                        *s = voice(n);
                        n += 1;
                    }
                }
                out.push(detector.frame(&frame).voiced);
            }
        }
        out
    }

    #[test]
    fn a_pause_idles_the_network_and_changes_nothing_that_is_heard() {
        let mut idling = VoiceDetector::new(0.5, 6.0);
        let mut always = VoiceDetector::new(0.5, 6.0);
        always.idle_after = u32::MAX;
        let idled = verdicts(&mut idling, 1200, 2000, 4);
        let ran = verdicts(&mut always, 1200, 2000, 4);
        assert_eq!(idling.quiet_frames, 100);
        assert!(
            idling.quiet_frames > idling.idle_after,
            "the last pause idled earshot"
        );
        let per_round = 160;
        for round in 0..4 {
            let range = round * per_round..(round + 1) * per_round;
            let onset = |v: &[bool]| v[range.clone()].iter().position(|v| *v);
            let voiced = |v: &[bool]| v[range.clone()].iter().filter(|v| **v).count();
            let (a, b) = (onset(&idled).expect("voiced"), onset(&ran).expect("voiced"));
            assert!(
                a.abs_diff(b) <= 1,
                "round {round}: onset {a} idling, {b} not"
            );
            assert!(
                voiced(&idled).abs_diff(voiced(&ran)) <= 2,
                "round {round}: {} voiced frames idling, {} not",
                voiced(&idled),
                voiced(&ran)
            );
            // Nothing in the pauses.
            assert!(!idled[range.start + 70..range.end].iter().any(|v| *v));
        }
    }
}
