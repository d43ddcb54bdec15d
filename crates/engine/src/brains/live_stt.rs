//! `builtin:agent`'s live speech recognition (Deepgram): one session a call, fed the caller's
//! audio utterance by utterance as the speech loop hears them.
//!
//! [`LiveRecognition`] keeps the caller's last frames (an utterance's onset is heard before the
//! speech loop says it started) and, from the speech loop's `SpeechStarted`, streams the
//! caller's audio into the session. `SpeechEnded` finishes the utterance: its transcript is the
//! session's answer. `SpeechDropped` (a click, a cough: a start too short to be an utterance)
//! finishes it too, and its answer goes nowhere, so its words never join the next utterance's
//! transcript. Interim words of the utterance under way
//! are kept for the conversation to start on.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use dialtone_agent::{AgentError, BoxFuture, Listening, StreamingSpeechToText};

/// The caller's most recent frames kept for an utterance's onset.
const ONSET_FRAMES: usize = 25;

/// A call's live recognition; see the [module documentation](self).
pub(crate) struct LiveRecognition {
    /// The live recogniser, when the agent's `stt` has one.
    stt: Option<Arc<dyn StreamingSpeechToText>>,
    /// The call's language.
    language: Option<String>,
    /// The session, once opened.
    session: Option<Listening>,
    /// The caller's last frames, for an utterance's onset.
    recent: VecDeque<(Instant, Vec<i16>)>,
    /// The caller's audio is going to the session (an utterance is under way).
    streaming: bool,
    /// The transcript of the utterance just ended.
    finishing: Option<BoxFuture<'static, Result<String, AgentError>>>,
    /// The session's interim words of the utterance under way.
    heard_so_far: Option<String>,
}

impl LiveRecognition {
    /// Live recognition with `stt` (none: nothing is streamed) in `language`, not yet open.
    pub(crate) fn new(
        stt: Option<Arc<dyn StreamingSpeechToText>>,
        language: Option<String>,
    ) -> Self {
        Self {
            stt,
            language,
            session: None,
            recent: VecDeque::with_capacity(ONSET_FRAMES),
            streaming: false,
            finishing: None,
            heard_so_far: None,
        }
    }

    /// Opens a session (again, after a failure), with a live recogniser.
    pub(crate) fn open(&mut self) {
        self.streaming = false;
        self.session = self
            .stt
            .as_ref()
            .map(|stt| stt.listen(self.language.clone()));
    }

    /// Closes the session: nothing more is heard.
    pub(crate) fn close(&mut self) {
        self.session = None;
        self.streaming = false;
    }

    /// Whether a session is open.
    pub(crate) fn is_open(&self) -> bool {
        self.session.is_some()
    }

    /// A frame of the caller that came at `now`: kept for an onset, and streamed during an
    /// utterance.
    pub(crate) fn frame(&mut self, now: Instant, samples: &[i16]) {
        let Some(session) = &self.session else {
            return;
        };
        if self.recent.len() == ONSET_FRAMES {
            self.recent.pop_front();
        }
        self.recent.push_back((now, samples.to_vec()));
        if self.streaming {
            session.push_audio(samples);
        }
    }

    /// The speech loop heard the caller start at `at`: the utterance streams from its onset's
    /// first frame.
    pub(crate) fn speech_started(&mut self, at: Instant) {
        if let (false, Some(session)) = (self.streaming, &self.session) {
            self.streaming = true;
            self.heard_so_far = None;
            for (_, frame) in self.recent.iter().filter(|(t, _)| *t >= at) {
                session.push_audio(frame);
            }
        }
    }

    /// The utterance ended: its transcript is the session's answer
    /// ([`LiveRecognition::take_transcript`]).
    pub(crate) fn speech_ended(&mut self) {
        if let (true, Some(session)) = (self.streaming, &self.session) {
            self.streaming = false;
            self.finishing = Some(session.finish());
        }
    }

    /// The speech loop dropped the start (too short to be an utterance): the session is told
    /// it ended, so it does not run into the next one, and its answer (the noise's words, if
    /// any) is dropped unread.
    pub(crate) fn speech_dropped(&mut self) {
        if let (true, Some(session)) = (self.streaming, &self.session) {
            self.streaming = false;
            self.heard_so_far = None;
            drop(session.finish());
        }
    }

    /// The transcript of the utterance just ended, when it was streamed.
    pub(crate) fn take_transcript(
        &mut self,
    ) -> Option<BoxFuture<'static, Result<String, AgentError>>> {
        self.finishing.take()
    }

    /// The session's interim words (all of the utterance so far): kept while it is under way.
    pub(crate) fn interim(&mut self, words: String) {
        if self.streaming {
            self.heard_so_far = Some(words);
        }
    }

    /// The last interim words of the utterance just ended.
    pub(crate) fn take_heard_so_far(&mut self) -> Option<String> {
        self.heard_so_far.take()
    }

    /// The session's next interim words (pending while no session is open).
    pub(crate) async fn next_interim(&mut self) -> Option<String> {
        match &mut self.session {
            Some(session) => session.interim().await,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::time::Duration;

    use dialtone_agent::{DeepgramTranscriber, StreamingProvider};
    use dialtone_speech::{FRAME_SAMPLES, SpeechConfig, SpeechEvent, SpeechLoop, level_dbfs};
    use dialtone_test_support::deepgram::{DeepgramReply, ScriptedDeepgram};
    use dialtone_test_support::media::speech_pcm16k;

    use super::*;

    const FRAME: Duration = Duration::from_millis(20);

    fn silence(ms: usize) -> Vec<i16> {
        vec![0; ms * 16]
    }

    /// The caller clicks (the first 120 ms of a spoken "Yes": past the onset, short of an
    /// utterance), then says a sentence. Fed through the speech loop on a virtual clock into a
    /// live session with the scripted Deepgram peer, whose first finalisation would answer the
    /// click's words: the sentence's transcript is its own words alone, the click having been
    /// finalised (and its answer dropped) before the sentence was streamed.
    #[tokio::test]
    async fn a_dropped_start_is_finalised_and_its_words_stay_out_of_the_next_utterance() {
        let dir = tempfile::tempdir().unwrap();
        let word = speech_pcm16k(dir.path(), "Yes").unwrap();
        let onset = word
            .chunks_exact(FRAME_SAMPLES)
            .position(|f| level_dbfs(f) > -40.0)
            .unwrap()
            * FRAME_SAMPLES;
        let click = word[onset..onset + 120 * 16].to_vec();
        let sentence = speech_pcm16k(dir.path(), "I would like a table for two").unwrap();
        let audio = [silence(500), click, silence(1000), sentence, silence(1000)].concat();

        let peer = ScriptedDeepgram::start().await.unwrap();
        peer.push(DeepgramReply::Utterances(vec![
            vec!["uh".into()],
            vec!["I would like a table for two.".into()],
        ]));
        let provider = StreamingProvider::new("ears", peer.base_url(), Some("dg-key".into()));
        let stt: Arc<dyn StreamingSpeechToText> =
            Arc::new(DeepgramTranscriber::new(provider, "nova-3"));
        let mut live = LiveRecognition::new(Some(stt), Some("en-US".into()));
        live.open();

        let t0 = Instant::now();
        let mut speech = SpeechLoop::new(SpeechConfig::default(), t0);
        let (mut heard, mut dropped) = (Vec::new(), 0);
        for (i, frame) in audio.chunks_exact(FRAME_SAMPLES).enumerate() {
            let now = t0 + FRAME * i as u32;
            speech.handle_caller_frame(now, frame);
            live.frame(now, frame);
            while let Some(event) = speech.poll_event() {
                match event {
                    SpeechEvent::SpeechStarted { at } => live.speech_started(at),
                    SpeechEvent::SpeechDropped { .. } => {
                        dropped += 1;
                        live.speech_dropped();
                    }
                    SpeechEvent::SpeechEnded { .. } => {
                        live.speech_ended();
                        heard.push(live.take_transcript().unwrap().await.unwrap());
                    }
                    _ => {}
                }
            }
        }
        assert_eq!(dropped, 1, "the click started and was dropped");
        assert_eq!(heard, ["I would like a table for two."]);
        drop(live);
        let session = peer.ended(0, Duration::from_secs(5)).await.unwrap();
        let finalized: Vec<usize> = session.finalized.iter().map(|(_, bytes)| *bytes).collect();
        assert_eq!(finalized.len(), 2, "the click, then the sentence");
        // The first finalisation came after the click and the endpointing silence that
        // dropped it (at most 120 + 500 ms and a frame or two), before any of the sentence.
        assert!(
            (500 * 32..=700 * 32).contains(&finalized[0]),
            "the click's audio alone: {} bytes",
            finalized[0]
        );
    }
}
