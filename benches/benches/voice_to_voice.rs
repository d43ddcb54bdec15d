//! Voice-to-voice engine overhead with an echo brain: a caller's utterance (espeak-ng speech)
//! goes over RTP through a media worker into the speech loop; when the loop ends the utterance
//! (after its endpointing silence) the utterance is played back; the time from that moment to
//! the first voiced RTP packet back at the caller is the engine's share of the delay (ring,
//! pacing tick, resampling, encoding, the wire on loopback). Repeated `ROUNDS` times (default
//! 20), reported as p50/p99/max.
//!
//! `cargo bench -p dialtone-benches --bench voice_to_voice`

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dialtone_media::{AudioFrame, FRAME_SAMPLES, MediaCodec, MediaConfig, MediaEngine, PortPool};
use dialtone_speech::{SpeechConfig, SpeechEvent, SpeechLoop};

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let speech =
        dialtone_test_support::media::speech_pcm16k(dir.path(), "Hello can you hear me").unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut delays: Vec<Duration> = runtime.block_on(async move {
        let engine = MediaEngine::new(1).unwrap();
        let pool = PortPool::new("127.0.0.1".parse().unwrap(), 47100, 47199);
        let (caller_port, agent_port) = (pool.bind().unwrap(), pool.bind().unwrap());
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let (caller_addr, agent_addr) = (addr(caller_port.port()), addr(agent_port.port()));
        let mut caller = engine
            .start(
                caller_port,
                MediaConfig::new(MediaCodec::Pcmu, 0, Some(agent_addr), 1),
            )
            .unwrap();
        let mut agent = engine
            .start(
                agent_port,
                MediaConfig::new(MediaCodec::Pcmu, 0, Some(caller_addr), 2),
            )
            .unwrap();
        let (mut caller_out, mut caller_in) = (
            caller.take_outbound().unwrap(),
            caller.take_inbound().unwrap(),
        );
        let (mut agent_out, mut agent_in) = (
            agent.take_outbound().unwrap(),
            agent.take_inbound().unwrap(),
        );
        let mut delays = Vec::new();
        for _ in 0..rounds {
            // The caller speaks (paced by its ring), then is silent.
            let mut frames = speech.chunks_exact(FRAME_SAMPLES);
            let mut speech_loop = SpeechLoop::new(SpeechConfig::default(), Instant::now());
            let mut ended_at = None;
            let mut silent_since_end = 0;
            loop {
                while caller_out.free() > 45 {
                    let mut frame = AudioFrame::silence(Instant::now());
                    if let Some(chunk) = frames.next() {
                        frame.samples.copy_from_slice(chunk);
                    }
                    let _ = caller_out.try_send(frame);
                }
                // The agent side: the speech loop hears the caller; at the end of the
                // utterance the echo goes straight into the agent's ring.
                while let Some(frame) = agent_in.try_recv() {
                    speech_loop.handle_caller_frame(Instant::now(), &frame.samples);
                }
                while let Some(event) = speech_loop.poll_event() {
                    if let SpeechEvent::SpeechEnded { audio, .. } = event {
                        ended_at = Some(Instant::now());
                        for chunk in audio.chunks(FRAME_SAMPLES).take(40) {
                            let mut frame = AudioFrame::silence(Instant::now());
                            frame.samples[..chunk.len()].copy_from_slice(chunk);
                            let _ = agent_out.try_send(frame);
                        }
                    }
                }
                // The caller hears the echo.
                while let Some(frame) = caller_in.try_recv() {
                    if let Some(end) = ended_at
                        && dialtone_media::level_dbfs(&frame.samples) > -40.0
                    {
                        delays.push(frame.at.saturating_duration_since(end));
                        ended_at = None;
                        silent_since_end = 1;
                    }
                }
                if silent_since_end > 0 {
                    silent_since_end += 1;
                    // Let the echo play out before the next round.
                    if silent_since_end > 150 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        caller.stop().await;
        agent.stop().await;
        delays
    });
    delays.sort();
    let pick =
        |q: f64| delays[((delays.len() as f64 * q).ceil() as usize).clamp(1, delays.len()) - 1];
    println!(
        "voice to voice, engine overhead after the end of the utterance ({} rounds): p50 {:?} p99 {:?} max {:?}",
        delays.len(),
        pick(0.5),
        pick(0.99),
        delays.last().unwrap()
    );
}
