//! A labelled set of answering-machine-detection (AMD) clips, generated at test time: what the
//! engine's speech loop hears in the first seconds after a PCMU call is answered, and who really
//! answered it.
//!
//! # The set
//!
//! [`generate`] synthesises every clip from text with espeak-ng (voices, variants, rates and
//! pitches of the [`Pool`]), lays the pieces out with silences and beeps, and sends the result
//! down a telephone line. Each pool holds 72 person pick-ups and 70 machine greetings:
//!
//! | truth | style | what it is |
//! |---|---|---|
//! | person | `one_word` | "Hello?", "Yeah?", "Hi." |
//! | person | `short` | "Hello, this is Dana." |
//! | person | `intro` | full-sentence introductions of about 1.5–4 s ("Thank you for calling Acme plumbing, this is Joe, how can I help you?") |
//! | person | `hello_hello` | "Hello?", 1.5–3 s of silence, "Hello?" again |
//! | person | `late_start` | 1.5–3.5 s of line noise before the first word |
//! | person | `noisy` | white, pink, brown or babble noise at 10–25 dB SNR |
//! | person | `quiet` | a quiet talker (−27 to −33 dBFS) |
//! | machine | `personal` | "Hi, you've reached Sam. I can't take your call right now. Leave a message…" |
//! | machine | `carrier` | "The person you are calling is not available. At the tone, please record…", some with the owner's recorded name in another voice, some reading the number out |
//! | machine | `short_greeting` | a carrier's "Please leave a message after the tone." (about 2 s) |
//! | machine | `business` | "Thank you for calling … Our office is closed … leave your name and number…" |
//! | machine | `ivr` | "Thank you for calling … If you know your party's extension … press 1…" (beep rarely) |
//! | machine | `hello_then_message` | "Hello?", a 0.6–1.5 s pause, then "Hi, this is Tom, I'm not here right now…" |
//!
//! A person starts speaking 0.15–1 s after the answer (1.5–3.5 s for `late_start`), says one
//! phrase, then waits: the clip is padded with line noise or silence to 6–8 s, and about a third
//! of them say "Hello?" (or the like) again after 2–4 s. A machine starts 0.1–0.9 s after the
//! answer and speaks its sentences with 200–900 ms between them (each sentence synthesised on
//! its own, so the pauses are real and known); about 70 % end with a beep 200–1000 ms
//! after the greeting (400–2000 Hz, 150 ms–2 s, pure, with harmonics, with a ±30 Hz chirp, or
//! two steps), and every machine clip ends with 3–5 s of silence or line noise where the
//! caller's message would go. Some machine greetings carry the hiss of their own recording
//! (which stops when the greeting does), and some lines are noisy for machines too, so that
//! noise alone says nothing about who answered.
//!
//! The `Holdout` pool uses different phrases, voices (accents and variants), rates, pitches
//! and noise levels than `Tuning`: tune a classifier on `Tuning`, check it on `Holdout`.
//!
//! # The processing chain
//!
//! For each clip, at 16 kHz:
//!
//! 1. espeak-ng speaks each sentence; sox converts it to 16 kHz and trims espeak-ng's leading
//!    and trailing silence ([`media::speech_pcm16k_voiced`](crate::media::speech_pcm16k_voiced)),
//!    so a piece's length is its speech and every timing below comes from the lengths of the
//!    pieces laid end to end (exact to the sample; the filters below add no delay).
//! 2. Each sentence gets ±1.5 dB of level jitter; the whole speech is scaled to the clip's
//!    active speech level (−8 to −24 dBFS, quiet talkers −27 to −33 dBFS).
//! 3. The beep is added (its peak −3 to +9 dB from the speech level, at most −3 dBFS, with
//!    5 ms ramps), then noise: background noise at the clip's SNR (relative to the active
//!    speech level), idle-line hiss at −50 to −68 dBFS, or nothing (digital silence), all from
//!    a seeded generator of our own.
//! 4. sox band-limits to the telephone band (a linear-phase `sinc` of 200–350 Hz to
//!    3200–3500 Hz, varied per clip) and resamples to 8 kHz.
//! 5. G.711 µ-law round trip (`dialtone_codec`), then up to 16 kHz with the engine's own
//!    resampler (its delay removed): the path a PCMU call takes into the speech loop.
//!
//! Generation is deterministic for a pool (the same clips, byte for byte, on every run) and
//! runs on a few threads, each with its own work directory under `dir`.

use std::path::{Path, PathBuf};
use std::process::Command;

use dialtone_codec::{Resampler, linear_to_ulaw, ulaw_to_linear};

use crate::PeerError;
use crate::media::{run, speech_pcm16k_voiced};

/// The clips' sample rate.
pub const RATE: u32 = 16_000;
const PER_MS: usize = (RATE / 1000) as usize;

/// Who really answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Truth {
    /// A person picked up.
    Person,
    /// An answering machine, voicemail or IVR picked up.
    Machine,
}

/// A voicemail beep inside a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct BeepSpan {
    /// Where the beep starts, from the clip's start.
    pub start_ms: u32,
    /// Where it ends.
    pub end_ms: u32,
    /// Its (first) frequency; the centre of a chirp.
    pub hz: f32,
    /// A two-step tone: where the second step starts, and its frequency.
    pub second: Option<(u32, f32)>,
    /// Whether it carries 2nd and 3rd harmonics (a harsher, square-ish beep).
    pub harmonics: bool,
    /// The chirp's half-sweep: the frequency glides from `hz − chirp_hz` to `hz + chirp_hz`.
    pub chirp_hz: f32,
}

/// One labelled clip.
#[derive(Debug, Clone)]
pub struct AmdClip {
    /// Unique and descriptive, e.g. `person-intro-07-en-us-f3-170wpm-p50-pink15db`.
    pub name: String,
    /// Who answered.
    pub truth: Truth,
    /// The kind of clip (see the module's table).
    pub style: &'static str,
    /// 16 kHz mono PCM16: what the engine's speech loop would get.
    pub samples: Vec<i16>,
    /// Person: the end of their first phrase (when the agent should greet). Machine: `None`.
    pub speech_end_ms: Option<u32>,
    /// Machine: the end of the spoken greeting. Person: the end of their last speech.
    pub greeting_end_ms: u32,
    /// The beep, when there is one.
    pub beep: Option<BeepSpan>,
    /// Every spoken piece, in order: start and end (ms).
    pub speech: Vec<(u32, u32)>,
    /// The text of every spoken piece, in order.
    pub texts: Vec<String>,
    /// The main espeak-ng voice, e.g. `en-us-f3-170wpm-p50`.
    pub voice: String,
    /// Background noise relative to the active speech level, when the line is noisy.
    pub snr_db: Option<f32>,
    /// The active speech level before the line (dBFS).
    pub level_dbfs: f32,
}

/// Which phrase/voice pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// For tuning the classifier.
    Tuning,
    /// Different phrases, voices, rates and noise levels, for checking that the classifier
    /// generalises.
    Holdout,
}

impl Pool {
    fn label(self) -> &'static str {
        match self {
            Pool::Tuning => "tuning",
            Pool::Holdout => "holdout",
        }
    }

    fn tables(self) -> &'static Tables {
        match self {
            Pool::Tuning => &TUNING,
            Pool::Holdout => &HOLDOUT,
        }
    }

    /// Every phrase this pool may speak (the test checks that the pools share none).
    pub fn phrases(self) -> Vec<&'static str> {
        let t = self.tables();
        let mut all: Vec<&'static str> = [
            t.one_word,
            t.short,
            t.intro,
            t.hello,
            t.again,
            t.personal_open,
            t.personal_body,
            t.personal_close,
            t.hello_rest,
            t.short_greeting,
            t.owner_names,
            t.babble,
        ]
        .concat();
        for group in [t.carrier, t.business, t.ivr] {
            for template in group {
                all.extend(template.iter().filter(|s| ![NAME, NUMBER].contains(s)));
            }
        }
        all
    }
}

/// The words of a phrase, lower case, without punctuation: what "the same phrase" means.
pub fn normalise(phrase: &str) -> String {
    phrase
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join(" ")
}

impl AmdClip {
    /// Writes the clip as a 16 kHz mono 16-bit WAV file (for baresip to play).
    pub fn write_wav(&self, path: &Path) -> Result<(), PeerError> {
        crate::media::write_wav(path, RATE, &self.samples)
    }

    /// The clip's length in milliseconds.
    pub fn duration_ms(&self) -> u32 {
        (self.samples.len() / PER_MS) as u32
    }
}

/// Generates the set of `pool`: at least 60 person and 60 machine clips, deterministic for the
/// pool. Temporary files go under `dir`.
pub fn generate(dir: &Path, pool: Pool) -> Result<Vec<AmdClip>, PeerError> {
    let tables = pool.tables();
    let plans = plans(pool, tables);
    let work = |w: usize| -> PathBuf { dir.join(format!("amd-{}-{w}", pool.label())) };
    let threads = std::thread::available_parallelism()
        .map_or(2, usize::from)
        .clamp(1, 4);
    for w in 0..threads {
        std::fs::create_dir_all(work(w))
            .map_err(PeerError::io("creating the AMD work directory"))?;
    }
    let babble = babble_bank(&work(0), tables)?;
    let results: Vec<Result<Vec<(usize, AmdClip)>, PeerError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|w| {
                let (plans, babble, dir) = (&plans, &babble, work(w));
                scope.spawn(move || {
                    plans
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| i % threads == w)
                        .map(|(i, plan)| render(&dir, plan, babble).map(|clip| (i, clip)))
                        .collect::<Result<Vec<_>, PeerError>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(PeerError::Invalid {
                        what: "an AMD clip worker panicked".into(),
                    })
                })
            })
            .collect()
    });
    let mut clips = Vec::with_capacity(plans.len());
    for r in results {
        clips.extend(r?);
    }
    clips.sort_by_key(|(i, _)| *i);
    for w in 0..threads {
        let _ = std::fs::remove_dir_all(work(w));
    }
    Ok(clips.into_iter().map(|(_, c)| c).collect())
}

// ---------------------------------------------------------------------------------------------
// Randomness

/// xorshift64: small, seeded, good enough for picking phrases and making noise, and cheap in
/// unoptimised test builds (shifts and exclusive-ors only).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Spread the seed's bits; xorshift must not start at zero.
        let mut z = seed ^ 0x9E37_79B9_7F4A_7C15;
        z ^= z << 29;
        z ^= z >> 31;
        z ^= z << 11;
        Rng(z | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    fn ms(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next_u64() % u64::from(hi - lo + 1)) as u32
    }

    fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One element of a non-empty constant table.
    #[allow(clippy::indexing_slicing)] // every table here is a non-empty constant
    fn pick<T: Copy>(&mut self, table: &[T]) -> T {
        table[self.below(table.len())]
    }

    /// Zero mean, unit variance: uniform, which the telephone band's filtering makes about
    /// normal anyway.
    fn noise(&mut self) -> f32 {
        (self.unit() - 0.5) * 3.464
    }
}

// ---------------------------------------------------------------------------------------------
// The pools' phrases and voices

struct Tables {
    seed: u64,
    langs: &'static [&'static str],
    variants: &'static [&'static str],
    rates: &'static [u32],
    pitches: &'static [u32],
    snrs: &'static [f32],
    one_word: &'static [&'static str],
    short: &'static [&'static str],
    intro: &'static [&'static str],
    hello: &'static [&'static str],
    again: &'static [&'static str],
    personal_open: &'static [&'static str],
    personal_body: &'static [&'static str],
    personal_close: &'static [&'static str],
    /// What follows a machine's opening "Hello?".
    hello_rest: &'static [&'static str],
    carrier: &'static [&'static [&'static str]],
    short_greeting: &'static [&'static str],
    business: &'static [&'static [&'static str]],
    ivr: &'static [&'static [&'static str]],
    /// Recorded names a carrier greeting plays in the owner's voice.
    owner_names: &'static [&'static str],
    /// Background talkers for babble noise.
    babble: &'static [&'static str],
}

/// In a carrier template, replaced by the owner's recorded name (in another voice).
const NAME: &str = "<name>";
/// In a carrier template, replaced by a phone number read digit by digit.
const NUMBER: &str = "<number>";

static TUNING: Tables = Tables {
    seed: 0x5EED_0001,
    langs: &["en-us", "en", "en-gb-scotland", "en-029"],
    variants: &[
        "f1", "f2", "f3", "m1", "m2", "m3", "klatt", "klatt3", "Andy", "Annie",
    ],
    rates: &[130, 145, 160, 175, 190, 205],
    pitches: &[35, 45, 55, 65, 75],
    snrs: &[10.0, 13.0, 16.0, 19.0, 22.0, 25.0],
    one_word: &[
        "Hello?",
        "Yeah?",
        "Hi.",
        "Yes?",
        "Hey.",
        "Speaking.",
        "Hello!",
        "Mm-hm?",
    ],
    short: &[
        "Hello, this is Dana.",
        "Hi, it's Mark.",
        "Yes, hello?",
        "Hello, Peter speaking.",
        "Hey, what's up?",
        "Hello, who is this?",
        "Dana Smith.",
        "Good morning!",
        "Hi, yeah, go ahead.",
    ],
    intro: &[
        "Good afternoon, Miller residence, Karen speaking.",
        "Thank you for calling Acme plumbing, this is Joe, how can I help you?",
        "Hello, this is doctor Patel's office, how may I help you?",
        "Hi, you've got Linda, what can I do for you today?",
        "Good morning, Johnson and Sons, Mike speaking.",
        "Hello, front desk, this is Amy.",
        "Riverside dental, this is Grace, how can I help?",
        "Hello, this is Brian, who's calling please?",
        "Good evening, Harbor View hotel, how may I direct your call?",
        "Hi, this is Steve at the garage, what can I do for you?",
    ],
    hello: &["Hello?", "Hi?", "Hello, hello?"],
    again: &[
        "Hello?",
        "Hello? Anyone there?",
        "Hello, can you hear me?",
        "Is anybody there?",
    ],
    personal_open: &[
        "Hi, you've reached Sam.",
        "Hey, it's Maria.",
        "Hello, this is the Garcia family.",
        "Hi, this is Tom.",
        "You've reached Jessica's phone.",
        "Hey there, it's Ben.",
        "Hello, you've reached Alan and Sue.",
    ],
    personal_body: &[
        "I can't take your call right now.",
        "We're not available at the moment.",
        "Sorry I missed you.",
        "I'm away from my phone.",
        "I'm not here right now.",
    ],
    personal_close: &[
        "Leave a message and I'll call you back.",
        "Please leave your name and number after the beep.",
        "Leave a message and we'll get back to you as soon as we can.",
        "Talk to you soon, bye!",
        "Leave a message, thanks.",
    ],
    hello_rest: &[
        "Hi, this is Tom, I'm not here right now, leave a message.",
        "Ha, gotcha! This is Rick, I can't answer, leave a message.",
        "Just kidding, this is Jen's voicemail, leave a message after the beep.",
        "Sorry, you've reached Kim's voicemail, please leave a message.",
    ],
    carrier: &[
        &[
            "The person you are calling is not available.",
            "At the tone, please record your message.",
            "When you have finished recording, you may hang up.",
        ],
        &[
            "The number you have dialed,",
            NUMBER,
            "is not available.",
            "Please leave a message after the tone.",
        ],
        &[
            NAME,
            "is not available.",
            "Please leave a message after the tone.",
        ],
        &[
            "Your call has been forwarded to an automatic voice message system.",
            NUMBER,
            "is not available.",
            "At the tone, please record your message.",
        ],
        &[
            "The wireless customer you are calling is not available.",
            "Please try your call again later, or leave a message after the tone.",
        ],
    ],
    short_greeting: &[
        "Please leave a message after the tone.",
        "Leave a message.",
        "Record your message at the tone.",
        "Please leave a message.",
    ],
    business: &[
        &[
            "Thank you for calling Acme Plumbing.",
            "Our office is currently closed.",
            "Our hours are Monday through Friday, eight to five.",
            "Please leave your name, number, and a brief message, and we will return your call the next business day.",
        ],
        &[
            "You have reached the law offices of Carter and Hughes.",
            "No one is available to take your call.",
            "Please leave a detailed message and someone will get back to you.",
        ],
        &[
            "Hi, you've reached Sunshine Bakery.",
            "We're busy baking right now.",
            "Leave a message with your order and we'll call you back.",
        ],
        &[
            "Thanks for calling Smith Dental.",
            "If this is an emergency, please hang up and dial 9 1 1.",
            "Otherwise, leave a message and we will call you back.",
        ],
    ],
    ivr: &[
        &[
            "Thank you for calling First National Bank.",
            "If you know your party's extension, you may dial it at any time.",
            "For sales, press 1.",
            "For billing, press 2.",
            "To leave a message, press 3, or stay on the line.",
        ],
        &[
            "Welcome to City Water and Power.",
            "Please listen carefully, as our menu options have changed.",
            "To report an outage, press 1.",
            "For account information, press 2.",
        ],
        &[
            "Hello, and thank you for calling Metro Cable.",
            "Your call may be recorded for quality purposes.",
            "Please say or enter your account number.",
        ],
    ],
    owner_names: &["Mike Jones", "Sarah", "Dave Wilson", "Anna"],
    babble: &[
        "So I told him we would meet on Thursday at the station.",
        "No, the other one, the blue one by the window.",
        "Did you see the game last night, it was unbelievable.",
        "I think we need more coffee before the meeting starts.",
        "She said the kids are coming home for the holidays.",
        "Can you pass me the menu, I can't decide what to get.",
    ],
};

static HOLDOUT: Tables = Tables {
    seed: 0x5EED_0002,
    langs: &[
        "en-us-nyc",
        "en-gb-x-rp",
        "en-gb-x-gbclan",
        "en-gb-x-gbcwmd",
    ],
    variants: &[
        "f4", "f5", "m4", "m5", "m6", "m7", "klatt2", "klatt4", "linda", "edward",
    ],
    rates: &[138, 152, 168, 183, 198, 210],
    pitches: &[30, 40, 50, 60, 70],
    snrs: &[11.0, 14.5, 17.0, 20.5, 23.5],
    one_word: &[
        "Hullo?",
        "Yep?",
        "Hiya.",
        "Yello?",
        "Morning.",
        "Ya?",
        "Go ahead.",
    ],
    short: &[
        "Hi there, Olivia here.",
        "Hello, Raj speaking.",
        "Yeah, this is Tom.",
        "Hey, who's calling?",
        "Good evening.",
        "Ryan Cooper speaking.",
        "Hi, what can I do for you?",
        "Hello there, yes?",
    ],
    intro: &[
        "Good morning, Oakwood vet clinic, Emma speaking.",
        "Hello, Baker household, this is Lucy.",
        "Thanks for calling Summit roofing, Carlos here, what can I do for you?",
        "Hi, this is Nina at the front office, how can I help you?",
        "Evening, Greenfield library, Paul speaking.",
        "Hello, Westside auto repair, this is Dave.",
        "Hi, this is Rachel, may I ask who's calling?",
        "Good afternoon, Lakeside pharmacy, how can I help you today?",
        "Hello, property management, Sandra speaking.",
        "Yes, hi, this is Kevin, what's this about?",
    ],
    hello: &["Hullo, hullo?", "Hello there?", "Hiya?"],
    again: &[
        "Hullo? Anybody?",
        "Is someone there?",
        "Can you hear me?",
        "Hey, you there?",
    ],
    personal_open: &[
        "Hello, you have reached Mia and Jake.",
        "Hey, Chris here.",
        "Hi, this is Olga's cell.",
        "This is Daniel, hi.",
        "Hiya, you've got Priya.",
        "Greetings, this is Walter.",
        "Yo, it's Marcus.",
    ],
    personal_body: &[
        "I'm probably driving or in a meeting.",
        "Nobody can come to the phone just now.",
        "I'm out of the office this week.",
        "Can't get to the phone.",
        "We are out at the moment.",
    ],
    personal_close: &[
        "Drop me a message and I'll ring you back.",
        "Say your name and number and we'll return your call.",
        "Leave a short message, thanks!",
        "Text me or leave a voicemail, cheers.",
        "Speak after the beep.",
    ],
    hello_rest: &[
        "Ha, this is actually Paul's machine, you know what to do.",
        "Sorry, just a recording, this is Ellen, leave your details.",
        "Yeah, you got me, I'm not in, say something after the beep.",
        "It's Victor's voicemail, I will call back soon.",
    ],
    carrier: &[
        &[
            "The subscriber you have called is unavailable.",
            "Please record your message after the tone.",
            "To send a numeric page, press 5.",
        ],
        &[
            "You have reached",
            NUMBER,
            "Please leave your message at the beep.",
        ],
        &[
            NAME,
            "cannot take your call right now.",
            "Record your message after the tone, and press pound when done.",
        ],
        &[
            "Welcome to the voice mailbox of",
            NUMBER,
            "The mailbox owner is unavailable.",
            "Begin speaking after the tone.",
        ],
        &[
            "Sorry, the caller you are trying to reach is not answering.",
            "You can leave a voice message after the tone.",
        ],
    ],
    short_greeting: &[
        "Leave your message after the beep.",
        "You may leave a message now.",
        "Please record your message.",
        "Message, please.",
    ],
    business: &[
        &[
            "You've reached Pine Street Veterinary.",
            "We are closed for the evening.",
            "Our clinic opens at seven thirty tomorrow morning.",
            "For urgent care, please call the animal hospital, otherwise leave us a message.",
        ],
        &[
            "This is Bright Path Tutoring.",
            "All of our staff are helping other families right now.",
            "Leave your child's name and grade, and we'll ring you back today.",
        ],
        &[
            "Hello from Northside Hardware.",
            "We're out on a delivery.",
            "Leave your name and what you need, and we'll call when we're back.",
        ],
        &[
            "Thank you for contacting Keystone Insurance.",
            "Our agents are unavailable at this time.",
            "Please leave your policy number and a short message.",
        ],
    ],
    ivr: &[
        &[
            "Welcome to Central Medical Group.",
            "If this is a medical emergency, please hang up and dial 9 1 1.",
            "For appointments, press 1.",
            "For prescription refills, press 2.",
            "For all other questions, please hold.",
        ],
        &[
            "Thanks for calling Union Gas.",
            "For faster service, visit our website.",
            "To pay your bill, press 1.",
            "To speak with an agent, press 0.",
        ],
        &[
            "You have reached the main switchboard of Hillcrest College.",
            "Please say the name of the person or department you want.",
        ],
    ],
    owner_names: &["Jordan Lee", "Martha", "Ken Adams", "Bea"],
    babble: &[
        "We drove past the old mill and stopped for lunch in town.",
        "Honestly, the train was late again this morning.",
        "Put the boxes over there next to the printer, please.",
        "He never calls back when he says he will, you know.",
        "The weather turned cold so we stayed inside all weekend.",
        "I'll have the soup and a glass of water, thanks.",
    ],
};

#[derive(Debug, Clone, Copy)]
struct Voice {
    lang: &'static str,
    variant: &'static str,
    rate: u32,
    pitch: u32,
}

impl Voice {
    fn random(rng: &mut Rng, t: &Tables) -> Voice {
        Voice {
            lang: rng.pick(t.langs),
            variant: rng.pick(t.variants),
            rate: rng.pick(t.rates),
            pitch: rng.pick(t.pitches),
        }
    }

    fn args(&self) -> [String; 6] {
        [
            "-v".into(),
            format!("{}+{}", self.lang, self.variant),
            "-s".into(),
            self.rate.to_string(),
            "-p".into(),
            self.pitch.to_string(),
        ]
    }

    fn label(&self) -> String {
        format!(
            "{}-{}-{}wpm-p{}",
            self.lang,
            self.variant.to_lowercase(),
            self.rate,
            self.pitch
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Plans: what each clip says and when, decided before any synthesis

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoiseKind {
    White,
    Pink,
    Brown,
    Babble,
}

impl NoiseKind {
    fn label(self) -> &'static str {
        match self {
            NoiseKind::White => "white",
            NoiseKind::Pink => "pink",
            NoiseKind::Brown => "brown",
            NoiseKind::Babble => "babble",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct BeepPlan {
    hz: f32,
    ms: u32,
    /// Peak level relative to the clip's active speech level (dB); at most −3 dBFS.
    peak_db: f32,
    harmonics: bool,
    chirp_hz: f32,
    /// A two-step tone's second frequency (the steps split the length in two).
    second_hz: Option<f32>,
}

#[derive(Debug, Clone)]
enum Seg {
    Gap(u32),
    Say(String, Voice),
    Beep(BeepPlan),
    /// Pads the clip with silence to this total length, but at least the second value.
    PadTo(u32, u32),
}

#[derive(Debug, Clone)]
struct Plan {
    name: String,
    truth: Truth,
    style: &'static str,
    voice: Voice,
    segs: Vec<Seg>,
    level_dbfs: f32,
    /// Background noise and its SNR.
    noise: Option<(NoiseKind, f32)>,
    /// Idle-line hiss (dBFS), or none (digital silence).
    hiss_dbfs: Option<f32>,
    /// The greeting's own recording hiss, relative to its speech (dB).
    recorded_snr: Option<f32>,
    band: (u32, u32),
    seed: u64,
}

const PERSON_STYLES: [(&str, usize); 7] = [
    ("one_word", 10),
    ("short", 10),
    ("intro", 14),
    ("hello_hello", 10),
    ("late_start", 8),
    ("noisy", 12),
    ("quiet", 8),
];

const MACHINE_STYLES: [(&str, usize); 6] = [
    ("personal", 16),
    ("carrier", 12),
    ("short_greeting", 8),
    ("business", 12),
    ("ivr", 10),
    ("hello_then_message", 12),
];

const NOISE_KINDS: [NoiseKind; 4] = [
    NoiseKind::White,
    NoiseKind::Pink,
    NoiseKind::Brown,
    NoiseKind::Babble,
];

fn plans(pool: Pool, t: &Tables) -> Vec<Plan> {
    let mut rng = Rng::new(t.seed);
    let mut out = Vec::new();
    for (style, n) in PERSON_STYLES {
        for i in 0..n {
            out.push(person_plan(&mut rng, t, style, i));
        }
    }
    for (style, n) in MACHINE_STYLES {
        for i in 0..n {
            out.push(machine_plan(&mut rng, t, style, i));
        }
    }
    for (i, p) in out.iter_mut().enumerate() {
        p.seed = t.seed ^ ((i as u64 + 1) << 20) ^ if pool == Pool::Holdout { 0xABCD } else { 0 };
    }
    out
}

fn line(rng: &mut Rng, t: &Tables, noisy: bool) -> (Option<(NoiseKind, f32)>, Option<f32>) {
    let noise = if noisy {
        Some((rng.pick(&NOISE_KINDS), rng.pick(t.snrs)))
    } else if rng.chance(0.12) {
        Some((rng.pick(&NOISE_KINDS), rng.pick(t.snrs) + 6.0))
    } else {
        None
    };
    let hiss = if rng.chance(0.8) {
        Some(rng.range(-68.0, -50.0).round())
    } else {
        None
    };
    (noise, hiss)
}

fn band(rng: &mut Rng) -> (u32, u32) {
    (rng.ms(20, 35) * 10, rng.ms(320, 350) * 10)
}

fn person_plan(rng: &mut Rng, t: &Tables, style: &'static str, i: usize) -> Plan {
    let voice = Voice::random(rng, t);
    let lead = if style == "late_start" {
        rng.ms(1500, 3500)
    } else {
        rng.ms(150, 1000)
    };
    let first = match style {
        "one_word" => rng.pick(t.one_word),
        "short" => rng.pick(t.short),
        "intro" => rng.pick(t.intro),
        "hello_hello" => rng.pick(t.hello),
        _ => match rng.below(3) {
            0 => rng.pick(t.one_word),
            1 => rng.pick(t.short),
            _ => rng.pick(t.intro),
        },
    };
    let mut segs = vec![Seg::Gap(lead), Seg::Say(first.into(), voice)];
    if style == "hello_hello" {
        segs.push(Seg::Gap(rng.ms(1500, 3000)));
        let again = if rng.chance(0.5) {
            first
        } else {
            rng.pick(t.again)
        };
        segs.push(Seg::Say(again.into(), voice));
    } else if rng.chance(0.3) {
        segs.push(Seg::Gap(rng.ms(2000, 4000)));
        segs.push(Seg::Say(rng.pick(t.again).into(), voice));
    }
    segs.push(Seg::PadTo(rng.ms(6000, 8000), 800));
    let level_dbfs = if style == "quiet" {
        rng.range(-33.0, -27.0)
    } else {
        rng.range(-24.0, -8.0)
    }
    .round();
    let (noise, hiss_dbfs) = line(rng, t, style == "noisy");
    finish(Plan {
        name: format!("person-{style}-{i:02}"),
        truth: Truth::Person,
        style,
        voice,
        segs,
        level_dbfs,
        noise,
        hiss_dbfs,
        recorded_snr: None,
        band: band(rng),
        seed: 0,
    })
}

fn digits(rng: &mut Rng) -> String {
    let d: Vec<String> = (0..10).map(|_| rng.below(10).to_string()).collect();
    format!(
        "{}, {}, {}.",
        d.get(..3).unwrap_or_default().join(" "),
        d.get(3..6).unwrap_or_default().join(" "),
        d.get(6..).unwrap_or_default().join(" ")
    )
}

fn beep_plan(rng: &mut Rng) -> BeepPlan {
    let hz = (rng.range(400.0, 2000.0) / 10.0).round() * 10.0;
    let ms = match rng.below(10) {
        0..=2 => rng.ms(150, 300),
        3..=6 => rng.ms(300, 800),
        _ => rng.ms(800, 2000),
    };
    let (mut harmonics, mut chirp_hz, mut second_hz) = (false, 0.0, None);
    match rng.below(20) {
        0..=9 => {}
        10..=13 => harmonics = true,
        14..=16 => chirp_hz = if rng.chance(0.5) { 30.0 } else { -30.0 },
        _ => {
            second_hz = Some((hz * rng.range(0.6, 1.5) / 10.0).round().clamp(40.0, 200.0) * 10.0);
        }
    }
    BeepPlan {
        hz,
        ms: if second_hz.is_some() { ms.max(300) } else { ms },
        peak_db: rng.range(-3.0, 9.0).round(),
        harmonics,
        chirp_hz,
        second_hz,
    }
}

fn machine_plan(rng: &mut Rng, t: &Tables, style: &'static str, i: usize) -> Plan {
    let voice = Voice::random(rng, t);
    let mut sentences: Vec<(String, Voice)> = Vec::new();
    let mut say = |s: &str, v: Voice| sentences.push((s.to_string(), v));
    let mut opening_pause = None;
    match style {
        "personal" => {
            say(rng.pick(t.personal_open), voice);
            if rng.chance(0.8) {
                say(rng.pick(t.personal_body), voice);
            }
            say(rng.pick(t.personal_close), voice);
        }
        "hello_then_message" => {
            say(rng.pick(t.hello), voice);
            opening_pause = Some(rng.ms(600, 1500));
            if rng.chance(0.5) {
                say(rng.pick(t.hello_rest), voice);
            } else {
                say(rng.pick(t.personal_open), voice);
                say(rng.pick(t.personal_body), voice);
                say(rng.pick(t.personal_close), voice);
            }
        }
        "carrier" => {
            let owner = Voice::random(rng, t);
            for piece in rng.pick(t.carrier) {
                match *piece {
                    NAME => say(rng.pick(t.owner_names), owner),
                    NUMBER => say(&digits(rng), voice),
                    text => say(text, voice),
                }
            }
        }
        "short_greeting" => say(rng.pick(t.short_greeting), voice),
        "business" | "ivr" => {
            let template = rng.pick(if style == "ivr" { t.ivr } else { t.business });
            let drop = if template.len() > 3 && rng.chance(0.4) {
                1 + rng.below(template.len() - 2)
            } else {
                usize::MAX
            };
            for (k, s) in template.iter().enumerate() {
                if k != drop {
                    say(s, voice);
                }
            }
        }
        _ => say(rng.pick(t.personal_close), voice),
    }
    let mut segs = vec![Seg::Gap(rng.ms(100, 900))];
    for (k, (text, v)) in sentences.into_iter().enumerate() {
        if k > 0 {
            let pause = match (k, opening_pause) {
                (1, Some(p)) => p,
                _ => rng.ms(200, 900),
            };
            segs.push(Seg::Gap(pause));
        }
        segs.push(Seg::Say(text, v));
    }
    // Three in four end with a beep; an IVR waits for digits, so only one in three of those.
    let beeps = if style == "ivr" {
        i % 3 == 1
    } else {
        i % 4 != 2
    };
    if beeps {
        segs.push(Seg::Gap(rng.ms(200, 1000)));
        segs.push(Seg::Beep(beep_plan(rng)));
    }
    segs.push(Seg::Gap(rng.ms(3000, 5000)));
    let level_dbfs = if rng.chance(0.1) {
        rng.range(-30.0, -25.0)
    } else {
        rng.range(-24.0, -8.0)
    }
    .round();
    let (noise, hiss_dbfs) = line(rng, t, false);
    let recorded_snr = if rng.chance(0.3) {
        Some(rng.range(25.0, 45.0).round())
    } else {
        None
    };
    finish(Plan {
        name: format!("machine-{style}-{i:02}"),
        truth: Truth::Machine,
        style,
        voice,
        segs,
        level_dbfs,
        noise,
        hiss_dbfs,
        recorded_snr,
        band: band(rng),
        seed: 0,
    })
}

/// Completes a plan's name with its voice, beep and noise.
fn finish(mut plan: Plan) -> Plan {
    use std::fmt::Write as _;
    let _ = write!(plan.name, "-{}", plan.voice.label());
    for seg in &plan.segs {
        if let Seg::Beep(b) = seg {
            let _ = write!(plan.name, "-beep{}hz{}ms", b.hz, b.ms);
        }
    }
    if let Some((kind, snr)) = plan.noise {
        let _ = write!(plan.name, "-{}{}db", kind.label(), snr);
    }
    if plan.hiss_dbfs.is_none() && plan.noise.is_none() {
        plan.name.push_str("-clean");
    }
    plan
}

// ---------------------------------------------------------------------------------------------
// Rendering

fn db(x: f32) -> f32 {
    10f32.powf(x / 20.0)
}

fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// The RMS of the 20 ms frames within 30 dB of the loudest: the level of the speech, not of
/// its pauses.
fn active_rms(x: &[f32]) -> f32 {
    let frames: Vec<f32> = x.chunks(20 * PER_MS).map(rms).collect();
    let max = frames.iter().copied().fold(0.0, f32::max);
    let active: Vec<f32> = frames
        .into_iter()
        .filter(|f| *f > max * db(-30.0))
        .collect();
    if active.is_empty() {
        return 0.0;
    }
    (active.iter().map(|f| f * f).sum::<f32>() / active.len() as f32).sqrt()
}

fn speak(dir: &Path, text: &str, voice: &Voice) -> Result<Vec<f32>, PeerError> {
    let args = voice.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let pcm = speech_pcm16k_voiced(dir, text, &args, true)?;
    if pcm.is_empty() {
        return Err(PeerError::Invalid {
            what: format!("espeak-ng said nothing for {text:?}"),
        });
    }
    Ok(pcm.into_iter().map(f32::from).collect())
}

/// Unit-RMS background talkers, one per babble sentence, each in a different voice.
fn babble_bank(dir: &Path, t: &Tables) -> Result<Vec<Vec<f32>>, PeerError> {
    let mut rng = Rng::new(t.seed ^ 0xBABB1E);
    t.babble
        .iter()
        .map(|s| {
            let mut x = speak(dir, s, &Voice::random(&mut rng, t))?;
            let r = rms(&x).max(1.0);
            x.iter_mut().for_each(|v| *v /= r);
            Ok(x)
        })
        .collect()
}

/// `len` samples of unit-RMS noise of `kind`.
fn noise(rng: &mut Rng, kind: NoiseKind, len: usize, babble: &[Vec<f32>]) -> Vec<f32> {
    let mut x = vec![0.0f32; len];
    match kind {
        NoiseKind::White => x.iter_mut().for_each(|v| *v = rng.noise()),
        NoiseKind::Pink => {
            // Paul Kellet's economy pink filter.
            let (mut b0, mut b1, mut b2) = (0.0f32, 0.0f32, 0.0f32);
            for v in &mut x {
                let w = rng.noise();
                b0 = 0.99765 * b0 + w * 0.0990460;
                b1 = 0.96300 * b1 + w * 0.2965164;
                b2 = 0.57000 * b2 + w * 1.0526913;
                *v = b0 + b1 + b2 + w * 0.1848;
            }
        }
        NoiseKind::Brown => {
            let mut b = 0.0f32;
            for v in &mut x {
                b = 0.995 * b + 0.1 * rng.noise();
                *v = b;
            }
        }
        NoiseKind::Babble => {
            let talkers = 4 + rng.below(3);
            for _ in 0..talkers {
                let Some(voice) = babble.get(rng.below(babble.len())) else {
                    continue;
                };
                if voice.is_empty() {
                    continue;
                }
                let gain = rng.range(0.5, 1.0);
                let mut at = rng.below(voice.len());
                for v in &mut x {
                    at = if at + 1 < voice.len() { at + 1 } else { 0 };
                    *v += gain * voice.get(at).copied().unwrap_or(0.0);
                }
            }
        }
    }
    let r = rms(&x).max(1e-9);
    x.iter_mut().for_each(|v| *v /= r);
    x
}

fn beep_samples(b: &BeepPlan, level_dbfs: f32) -> Vec<f32> {
    let n = b.ms as usize * PER_MS;
    let peak = (level_dbfs + b.peak_db).min(-3.0);
    let amp = 32767.0 * db(peak) / if b.harmonics { 1.5 } else { 1.0 };
    let ramp = 5 * PER_MS;
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f32 / n as f32;
            let f = match b.second_hz {
                Some(f2) if i >= n / 2 => f2,
                _ => b.hz + b.chirp_hz * (2.0 * t - 1.0),
            };
            phase += 2.0 * std::f64::consts::PI * f64::from(f) / f64::from(RATE);
            let mut v = phase.sin() as f32;
            if b.harmonics {
                v += 0.35 * (2.0 * phase).sin() as f32 + 0.15 * (3.0 * phase).sin() as f32;
            }
            let edge = i.min(n - 1 - i).min(ramp) as f32 / ramp as f32;
            amp * v * edge
        })
        .collect()
}

fn render(dir: &Path, plan: &Plan, babble: &[Vec<f32>]) -> Result<AmdClip, PeerError> {
    let mut rng = Rng::new(plan.seed);
    let ms = |samples: usize| (samples / PER_MS) as u32;
    let mut speech: Vec<f32> = Vec::new();
    let mut beep_track: Vec<f32> = Vec::new();
    let mut spans = Vec::new();
    let mut texts = Vec::new();
    let mut beep = None;
    for seg in &plan.segs {
        let start = speech.len();
        match seg {
            Seg::Gap(gap) => speech.resize(start + *gap as usize * PER_MS, 0.0),
            Seg::Say(text, voice) => {
                let gain = db(rng.range(-1.5, 1.5));
                speech.extend(speak(dir, text, voice)?.into_iter().map(|v| v * gain));
                spans.push((start, speech.len()));
                texts.push(text.clone());
            }
            Seg::Beep(b) => {
                let tone = beep_samples(b, plan.level_dbfs);
                beep_track.resize(start, 0.0);
                beep_track.extend(&tone);
                speech.resize(start + tone.len(), 0.0);
                beep = Some(BeepSpan {
                    start_ms: ms(start),
                    end_ms: ms(speech.len()),
                    hz: b.hz,
                    second: b.second_hz.map(|f| (ms(start + tone.len() / 2), f)),
                    harmonics: b.harmonics,
                    chirp_hz: b.chirp_hz,
                });
            }
            Seg::PadTo(total, min) => {
                let end = (*total as usize * PER_MS).max(start + *min as usize * PER_MS);
                speech.resize(end, 0.0);
            }
        }
    }
    // Whole 20 ms frames, as the speech loop gets them.
    let len = speech.len().div_ceil(20 * PER_MS) * 20 * PER_MS;
    speech.resize(len, 0.0);
    beep_track.resize(len, 0.0);

    // The active speech level.
    let voiced: Vec<f32> = spans
        .iter()
        .flat_map(|(a, b)| speech.get(*a..*b).unwrap_or_default().iter().copied())
        .collect();
    let level = 32767.0 * db(plan.level_dbfs);
    let scale = level / active_rms(&voiced).max(1.0);
    speech.iter_mut().for_each(|v| *v *= scale);

    let mut mix: Vec<f32> = speech.iter().zip(&beep_track).map(|(s, b)| s + b).collect();
    if let (Some(snr), Some((first, _)), Some((_, last))) =
        (plan.recorded_snr, spans.first(), spans.last())
    {
        let hiss = noise(&mut rng, NoiseKind::Pink, last - first, babble);
        let gain = level * db(-snr);
        for (v, h) in mix.iter_mut().skip(*first).zip(hiss) {
            *v += gain * h;
        }
    }
    if let Some((kind, snr)) = plan.noise {
        let bed = noise(&mut rng, kind, len, babble);
        let gain = level * db(-snr);
        mix.iter_mut().zip(bed).for_each(|(v, n)| *v += gain * n);
    }
    if let Some(hiss) = plan.hiss_dbfs {
        let bed = noise(&mut rng, NoiseKind::White, len, babble);
        let gain = 32767.0 * db(hiss);
        mix.iter_mut().zip(bed).for_each(|(v, n)| *v += gain * n);
    }

    let samples = telephone(dir, &mix, plan.band)?;
    let first_end = spans.first().map(|(_, b)| ms(*b));
    let last_end = spans.last().map_or(0, |(_, b)| ms(*b));
    Ok(AmdClip {
        name: plan.name.clone(),
        truth: plan.truth,
        style: plan.style,
        samples,
        speech_end_ms: if plan.truth == Truth::Person {
            first_end
        } else {
            None
        },
        greeting_end_ms: last_end,
        beep,
        speech: spans.iter().map(|(a, b)| (ms(*a), ms(*b))).collect(),
        texts,
        voice: plan.voice.label(),
        snr_db: plan.noise.map(|(_, snr)| snr),
        level_dbfs: plan.level_dbfs,
    })
}

/// The line: band-limit and resample to 8 kHz (sox, linear phase, delay compensated), G.711
/// µ-law round trip, back up to 16 kHz with the engine's resampler (its delay removed).
fn telephone(dir: &Path, mix: &[f32], band: (u32, u32)) -> Result<Vec<i16>, PeerError> {
    let wide = dir.join("clip16k.raw");
    let narrow = dir.join("clip8k.raw");
    let mut bytes = Vec::with_capacity(2 * mix.len());
    for v in mix {
        bytes.extend_from_slice(&(v.round().clamp(-32768.0, 32767.0) as i16).to_le_bytes());
    }
    std::fs::write(&wide, bytes).map_err(PeerError::io("writing an AMD clip for sox"))?;
    let raw = |rate: &'static str| {
        [
            "-t",
            "raw",
            "-r",
            rate,
            "-e",
            "signed-integer",
            "-b",
            "16",
            "-c",
            "1",
        ]
    };
    run(
        Command::new("sox")
            .args(["-V1", "-D"])
            .args(raw("16000"))
            .arg(&wide)
            .args(raw("8000"))
            .arg(&narrow)
            .args(["sinc", &format!("{}-{}", band.0, band.1), "rate", "8000"]),
        "sox",
    )?;
    let narrow = std::fs::read(&narrow).map_err(PeerError::io("reading sox's 8 kHz clip"))?;
    let ulaw: Vec<i16> = narrow
        .chunks_exact(2)
        .filter_map(|b| <[u8; 2]>::try_from(b).ok())
        .map(|b| ulaw_to_linear(linear_to_ulaw(i16::from_le_bytes(b))))
        .collect();
    let codec = |e: dialtone_codec::CodecError| PeerError::Invalid {
        what: format!("resampling an AMD clip: {e}"),
    };
    let mut up = Resampler::new(8000, RATE).map_err(codec)?;
    let (frame_in, frame_out) = (up.input_samples(), up.output_samples());
    let delay = up.delay();
    let mut out = Vec::with_capacity(mix.len() + 2 * frame_out);
    let mut frame = vec![0i16; frame_out];
    let extra = delay.div_ceil(frame_out) * frame_in;
    let padded = ulaw.iter().copied().chain(std::iter::repeat_n(0, extra));
    let input: Vec<i16> = padded.collect();
    for chunk in input.chunks(frame_in) {
        let mut block = chunk.to_vec();
        block.resize(frame_in, 0);
        let n = up.process(&block, &mut frame).map_err(codec)?;
        out.extend_from_slice(frame.get(..n).unwrap_or_default());
    }
    Ok(out.into_iter().skip(delay).take(mix.len()).collect())
}
