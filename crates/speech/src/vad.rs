//! Voice activity per 20 ms frame: earshot's neural detector on 256-sample (16 ms) chunks,
//! gated by energy above an adaptive noise floor so steady background noise and line hum do not
//! count as speech however the network scores them. The floor is the quietest frame of the last
//! second (minimum statistics): speech always dips between syllables, steady noise never rises
//! above itself, and a stream that starts with noise is judged against that noise at once.

use std::collections::VecDeque;

/// Samples earshot scores at a time.
const CHUNK: usize = 256;

/// What one frame was.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameVoice {
    /// Whether the frame counts as speech.
    pub voiced: bool,
    /// The highest earshot score of the chunks the frame completed (0–1).
    pub score: f32,
    /// The frame's level, dBFS RMS.
    pub level_dbfs: f32,
    /// The noise floor after this frame, dBFS.
    pub noise_floor_dbfs: f32,
}

/// The detector of one audio stream.
pub struct VoiceDetector {
    earshot: Box<earshot::Detector>,
    pending: VecDeque<i16>,
    chunk: [i16; CHUNK],
    last_score: f32,
    levels: VecDeque<f32>,
    noise_floor: f32,
    threshold: f32,
    margin_db: f32,
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
    if samples.is_empty() {
        return -100.0;
    }
    let energy = samples
        .iter()
        .map(|s| f64::from(*s) * f64::from(*s))
        .sum::<f64>()
        / samples.len() as f64;
    if energy <= 0.0 {
        return -100.0;
    }
    ((10.0 * (energy / (32768.0 * 32768.0)).log10()) as f32).max(-100.0)
}

impl VoiceDetector {
    /// A detector calling a frame speech when earshot scores it above `threshold` and its
    /// level is `margin_db` above the noise floor.
    pub fn new(threshold: f32, margin_db: f32) -> Self {
        Self {
            earshot: Box::new(earshot::Detector::default()),
            pending: VecDeque::with_capacity(CHUNK * 3),
            chunk: [0; CHUNK],
            last_score: 0.0,
            levels: VecDeque::with_capacity(FLOOR_WINDOW),
            noise_floor: -100.0,
            threshold,
            margin_db,
        }
    }

    /// Scores one frame of 16 kHz audio.
    pub fn frame(&mut self, frame: &[i16]) -> FrameVoice {
        self.pending.extend(frame.iter().copied());
        let mut score: Option<f32> = None;
        while self.pending.len() >= CHUNK {
            for (slot, sample) in self.chunk.iter_mut().zip(self.pending.drain(..CHUNK)) {
                *slot = sample;
            }
            let s = self.earshot.predict_i16(&self.chunk).clamp(0.0, 1.0);
            score = Some(score.map_or(s, |m| m.max(s)));
        }
        // A frame that completed no chunk keeps the last score (chunks straddle frames).
        let score = score.unwrap_or(self.last_score);
        self.last_score = score;
        let level = level_dbfs(frame);
        if self.levels.len() == FLOOR_WINDOW {
            self.levels.pop_front();
        }
        self.levels.push_back(level);
        self.noise_floor = self.levels.iter().copied().fold(f32::INFINITY, f32::min);
        let voiced = score >= self.threshold && level >= self.noise_floor + self.margin_db;
        FrameVoice {
            voiced,
            score,
            level_dbfs: level,
            noise_floor_dbfs: self.noise_floor,
        }
    }
}
