//! The conversation machine on a virtual clock: every decision of a turn, no I/O, no sleeps.

use std::time::{Duration, Instant};

use dialtone_model::{EndReason, Tool, TransferDestination};
use serde_json::json;

use super::*;
use crate::chat::{ChatEvent, Role, ToolCall};
use crate::tools::{END_CALL, SEND_DTMF, Toolbox};

fn config(first_message: Option<&str>) -> ConversationConfig {
    ConversationConfig {
        system_prompt: "You are Ava.".into(),
        first_message: first_message.map(str::to_owned),
        toolbox: Toolbox::new(
            &[Tool {
                name: "lookup".into(),
                description: "Looks up an order".into(),
                parameters: json!({"type": "object"}),
                url: Some("https://tools.example/lookup".into()),
            }],
            &[TransferDestination {
                name: "sales".into(),
                to: "+14155550100".into(),
                description: "buying".into(),
                mode: None,
            }],
        ),
        destinations: vec![TransferDestination {
            name: "sales".into(),
            to: "+14155550100".into(),
            description: "buying".into(),
            mode: None,
        }],
        barge_in_off: false,
        mask_dtmf: false,
        speech_per_line: false,
    }
}

fn drain(c: &mut Conversation) -> Vec<Action> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn ms(start: Instant, ms: u64) -> Instant {
    start + Duration::from_millis(ms)
}

/// The id of the one `Chat` action among `actions`, and its request.
fn chat_of(actions: &[Action]) -> (u64, ChatRequest) {
    let chats: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Chat {
                request_id,
                request,
            } => Some((*request_id, request.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(chats.len(), 1, "one chat request in {actions:?}");
    chats.into_iter().next().unwrap()
}

fn spoken(actions: &[Action]) -> Vec<(u64, String)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Speak { segment, text } => Some((*segment, text.clone())),
            _ => None,
        })
        .collect()
}

/// Plays every segment of `actions` whole (each `samples` long), as the driver reports it.
fn play_all(c: &mut Conversation, at: Instant, actions: &[Action], samples: usize) {
    for (segment, _) in spoken(actions) {
        c.handle_speech_audio(at, segment, samples);
        c.handle_speech_done(at, segment, Ok(()));
        c.handle_played(at, segment);
    }
}

/// A caller's utterance at `at`, transcribed as `text` at `heard`.
fn caller_says(c: &mut Conversation, at: Instant, heard: Instant, text: &str) -> Vec<Action> {
    c.handle_utterance(at, at, vec![100; 3200], false);
    let actions = drain(c);
    let Some(Action::Transcribe { utterance, audio }) = actions.first() else {
        panic!("expected a transcription, got {actions:?}");
    };
    assert_eq!(audio.len(), 3200);
    c.handle_transcript(heard, *utterance, Ok(text.into()));
    drain(c)
}

fn server_error(status: u16) -> AgentError {
    AgentError::Status {
        provider: "llm".into(),
        status,
        detail: "x".into(),
    }
}

#[test]
fn a_turn_streams_the_answer_into_speech_at_clause_boundaries() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Hi, this is Ava from Acme.")));
    c.handle_answered(t0);
    let opening = drain(&mut c);
    assert_eq!(
        spoken(&opening),
        [(2, "Hi, this is Ava from Acme.".to_owned())]
    );
    play_all(&mut c, ms(t0, 100), &opening, 16_000);
    assert!(drain(&mut c).is_empty(), "the model waits for the caller");

    let actions = caller_says(&mut c, ms(t0, 3000), ms(t0, 3200), "I'd like a quote.");
    let (id, request) = chat_of(&actions);
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::Assistant, Role::User]);
    assert_eq!(
        request.messages[1].content.as_deref(),
        Some("Hi, this is Ava from Acme.")
    );
    assert!(request.tools.iter().any(|t| t.name == "lookup"));

    c.handle_chat(
        ms(t0, 3400),
        id,
        Ok(ChatEvent::TextDelta("Sure thing, ".into())),
    );
    assert!(
        spoken(&drain(&mut c)).is_empty(),
        "two words are not a clause yet"
    );
    c.handle_chat(
        ms(t0, 3410),
        id,
        Ok(ChatEvent::TextDelta("happy to help you. What".into())),
    );
    let first = drain(&mut c);
    assert_eq!(
        spoken(&first),
        [(5, "Sure thing, happy to help you.".to_owned())]
    );
    assert!(
        c.handle_speech_audio(ms(t0, 3450), 5, 1600),
        "the answer's first audio"
    );
    c.handle_answer_on_wire(ms(t0, 3465));
    c.handle_chat(ms(t0, 3500), id, Ok(ChatEvent::TextDelta(" size?".into())));
    c.handle_chat(
        ms(t0, 3510),
        id,
        Ok(ChatEvent::Finished {
            reason: Some("stop".into()),
            usage: None,
        }),
    );
    let rest = drain(&mut c);
    assert_eq!(spoken(&rest), [(6, "What size?".to_owned())]);

    let stats = c.stats().to_json();
    assert_eq!(stats["turns"], 2);
    assert_eq!(stats["voice_to_voice_ms"]["max"], 465);
    assert_eq!(stats["stt_ms"]["max"], 200);
    assert_eq!(stats["llm_first_token_ms"]["max"], 200);
    let lines: Vec<(&str, &str)> = c.transcript().map(|l| (l.role, l.text.as_str())).collect();
    assert_eq!(
        lines,
        [
            ("agent", "Hi, this is Ava from Acme."),
            ("caller", "I'd like a quote."),
            ("agent", "Sure thing, happy to help you. What size?"),
        ]
    );
}

#[test]
fn without_a_first_message_the_model_opens() {
    let mut c = Conversation::new(config(None));
    c.handle_answered(Instant::now());
    let (_, request) = chat_of(&drain(&mut c));
    assert_eq!(request.messages.len(), 1);
}

#[test]
fn a_tool_round_trip_feeds_the_answer_back_and_rounds_are_capped() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (mut id, _) = chat_of(&drain(&mut c));
    for round in 0..MAX_TOOL_ROUNDS {
        let call = ToolCall {
            id: format!("call_{round}"),
            name: "lookup".into(),
            arguments: r#"{"order": 42}"#.into(),
        };
        c.handle_chat(t0, id, Ok(ChatEvent::ToolCalls(vec![call])));
        c.handle_chat(
            t0,
            id,
            Ok(ChatEvent::Finished {
                reason: None,
                usage: None,
            }),
        );
        let actions = drain(&mut c);
        assert_eq!(
            actions,
            [Action::CallTool {
                id: format!("call_{round}"),
                name: "lookup".into(),
                url: "https://tools.example/lookup".into(),
                arguments: json!({"order": 42}),
            }]
        );
        c.handle_tool_answer(
            t0,
            &format!("call_{round}"),
            Ok(json!({"status": "shipped"})),
        );
        let (next, request) = chat_of(&drain(&mut c));
        let last = request.messages.last().unwrap();
        assert_eq!(last.role, Role::Tool);
        assert_eq!(
            last.tool_call_id.as_deref(),
            Some(format!("call_{round}").as_str())
        );
        assert_eq!(last.content.as_deref(), Some(r#"{"status":"shipped"}"#));
        assert_eq!(
            request.tools.is_empty(),
            round + 1 == MAX_TOOL_ROUNDS,
            "tools are offered while rounds remain"
        );
        id = next;
    }
    let tool_lines: Vec<_> = c.transcript().filter(|l| l.role == "tool").collect();
    assert_eq!(tool_lines.len(), 3);
    assert_eq!(tool_lines[0].name.as_deref(), Some("lookup"));
    assert_eq!(tool_lines[0].arguments, Some(json!({"order": 42})));
    assert_eq!(tool_lines[0].result, Some(json!({"status": "shipped"})));
    assert_eq!(c.stats().tool_calls, 3);
}

#[test]
fn arguments_that_are_not_json_go_back_as_an_error_without_a_call() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    let call = ToolCall {
        id: "c1".into(),
        name: "lookup".into(),
        arguments: "{not json".into(),
    };
    c.handle_chat(t0, id, Ok(ChatEvent::ToolCalls(vec![call])));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    let actions = drain(&mut c);
    assert!(!actions.iter().any(|a| matches!(a, Action::CallTool { .. })));
    let (_, request) = chat_of(&actions);
    assert!(
        request
            .messages
            .last()
            .unwrap()
            .content
            .as_deref()
            .unwrap()
            .contains("not a JSON object")
    );
}

#[test]
fn end_call_hangs_up_after_the_goodbye_is_heard() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(t0, id, Ok(ChatEvent::TextDelta("Thanks, goodbye!".into())));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::ToolCalls(vec![ToolCall {
            id: "e".into(),
            name: END_CALL.into(),
            arguments: String::new(),
        }])),
    );
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    let actions = drain(&mut c);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::HangUp { .. } | Action::Chat { .. }))
    );
    let goodbye = spoken(&actions);
    assert_eq!(goodbye.len(), 1);
    c.handle_speech_audio(t0, goodbye[0].0, 8000);
    c.handle_speech_done(t0, goodbye[0].0, Ok(()));
    assert!(drain(&mut c).is_empty(), "not before it is heard");
    c.handle_played(ms(t0, 500), goodbye[0].0);
    assert_eq!(
        drain(&mut c),
        [Action::HangUp {
            reason: EndReason::Completed
        }]
    );
}

#[test]
fn send_dtmf_asks_the_driver_and_checks_the_digits() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    let calls = vec![
        ToolCall {
            id: "d1".into(),
            name: SEND_DTMF.into(),
            arguments: r#"{"digits": "12#"}"#.into(),
        },
        ToolCall {
            id: "d2".into(),
            name: SEND_DTMF.into(),
            arguments: r#"{"digits": "1x"}"#.into(),
        },
    ];
    c.handle_chat(t0, id, Ok(ChatEvent::ToolCalls(calls)));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    assert_eq!(
        drain(&mut c),
        [Action::SendDtmf {
            id: "d1".into(),
            digits: "12#".into()
        }]
    );
    c.handle_tool_answer(t0, "d1", Ok(json!({"sent": "12#"})));
    let (_, request) = chat_of(&drain(&mut c));
    let answers: Vec<_> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::Tool)
        .map(|m| (m.tool_call_id.clone().unwrap(), m.content.clone().unwrap()))
        .collect();
    assert_eq!(answers.len(), 2);
    assert!(
        answers
            .iter()
            .any(|(id, a)| id == "d2" && a.contains("0-9"))
    );
}

#[test]
fn barge_in_cuts_the_line_to_what_was_heard_and_cancels_the_rest() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::TextDelta(
            "Our plans start at ten dollars. The gold plan has every feature you".into(),
        )),
    );
    let pieces = spoken(&drain(&mut c));
    assert_eq!(pieces.len(), 1);
    c.handle_speech_audio(t0, pieces[0].0, 10_000);
    c.handle_speech_done(t0, pieces[0].0, Ok(()));
    c.handle_played(ms(t0, 600), pieces[0].0);
    c.handle_chat(
        ms(t0, 610),
        id,
        Ok(ChatEvent::TextDelta(" could want. Anything else?".into())),
    );
    let second = spoken(&drain(&mut c));
    assert_eq!(
        second[0].1,
        "The gold plan has every feature you could want."
    );
    // 46 characters; half its audio was heard.
    c.handle_speech_audio(ms(t0, 620), second[0].0, 46_000);
    c.handle_speech_done(ms(t0, 620), second[0].0, Ok(()));
    c.handle_barge_in(ms(t0, 1800), Some(second[0].0), 23_000);
    let actions = drain(&mut c);
    assert_eq!(actions, [Action::CancelChat, Action::StopSpeaking]);
    let agent = c.transcript().find(|l| l.role == "agent").unwrap();
    assert_eq!(
        agent.text,
        "Our plans start at ten dollars. The gold plan has every"
    );
    assert!(agent.interrupted);
    assert_eq!(
        c.history().last().unwrap().content.as_deref(),
        Some("Our plans start at ten dollars. The gold plan has every")
    );
    assert_eq!(c.stats().interruptions, 1);
    // The caller's interrupting utterance starts the next turn.
    let next = caller_says(&mut c, ms(t0, 2500), ms(t0, 2600), "How much is gold?");
    let (_, request) = chat_of(&next);
    assert_eq!(
        request.messages.last().unwrap().content.as_deref(),
        Some("How much is gold?")
    );
}

#[test]
fn a_backchannel_under_the_barge_in_minimum_starts_no_turn() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Let me tell you about our plans today.")));
    c.handle_answered(t0);
    let opening = spoken(&drain(&mut c));
    c.handle_speech_audio(t0, opening[0].0, 32_000);
    c.handle_utterance(ms(t0, 800), ms(t0, 800), vec![0; 4000], true);
    let Some(Action::Transcribe { utterance, .. }) = c.poll_action() else {
        panic!("transcribed")
    };
    c.handle_transcript(ms(t0, 900), utterance, Ok("uh-huh".into()));
    assert!(drain(&mut c).is_empty());
    assert!(
        c.transcript()
            .any(|l| l.role == "caller" && l.text == "uh-huh")
    );
}

#[test]
fn with_barge_in_off_the_agent_answers_after_it_finishes() {
    let t0 = Instant::now();
    let mut c = Conversation::new(ConversationConfig {
        barge_in_off: true,
        ..config(Some("Let me tell you about our plans."))
    });
    c.handle_answered(t0);
    let opening = spoken(&drain(&mut c));
    c.handle_speech_audio(t0, opening[0].0, 32_000);
    c.handle_speech_done(t0, opening[0].0, Ok(()));
    c.handle_utterance(ms(t0, 800), ms(t0, 800), vec![0; 4000], true);
    let Some(Action::Transcribe { utterance, .. }) = c.poll_action() else {
        panic!("transcribed")
    };
    c.handle_transcript(ms(t0, 900), utterance, Ok("What about prices?".into()));
    assert!(drain(&mut c).is_empty(), "the agent is still speaking");
    c.handle_played(ms(t0, 2000), opening[0].0);
    chat_of(&drain(&mut c));
}

#[test]
fn a_server_error_before_any_word_is_retried_once_then_fails() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, first) = chat_of(&drain(&mut c));
    c.handle_chat(t0, id, Err(server_error(503)));
    let (again, retried) = chat_of(&drain(&mut c));
    assert_eq!((again, &retried), (id, &first));
    c.handle_chat(t0, id, Err(server_error(503)));
    let actions = drain(&mut c);
    assert!(
        matches!(actions.last(), Some(Action::Fail { error }) if error.to_string().contains("503"))
    );
    c.handle_answered(t0);
    assert!(drain(&mut c).is_empty(), "nothing after a failure");
}

#[test]
fn a_refused_request_is_not_retried() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(t0, id, Err(server_error(401)));
    assert!(matches!(drain(&mut c).last(), Some(Action::Fail { .. })));
}

#[test]
fn speech_recognition_and_synthesis_failures_are_retried_once() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Hello there.")));
    c.handle_answered(t0);
    let opening = spoken(&drain(&mut c));
    c.handle_speech_done(t0, opening[0].0, Err(server_error(500)));
    assert_eq!(spoken(&drain(&mut c)), opening, "synthesis asked again");
    c.handle_speech_audio(t0, opening[0].0, 100);
    c.handle_speech_done(t0, opening[0].0, Ok(()));
    c.handle_played(t0, opening[0].0);
    c.handle_utterance(t0, t0, vec![0; 320], false);
    let Some(Action::Transcribe { utterance, .. }) = c.poll_action() else {
        panic!("transcribed")
    };
    let timeout = AgentError::Timeout {
        provider: "stt".into(),
        after: Duration::from_secs(15),
    };
    c.handle_transcript(t0, utterance, Err(timeout.clone()));
    assert!(matches!(
        drain(&mut c).as_slice(),
        [Action::Transcribe { .. }]
    ));
    c.handle_transcript(t0, utterance, Err(timeout));
    assert!(matches!(drain(&mut c).last(), Some(Action::Fail { .. })));
}

#[test]
fn a_slow_tool_gets_one_filler_phrase() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::ToolCalls(vec![ToolCall {
            id: "slow".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        }])),
    );
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    drain(&mut c);
    assert_eq!(c.poll_timeout(), Some(t0 + FILLER_AFTER));
    c.handle_timeout(ms(t0, 1000));
    assert!(drain(&mut c).is_empty());
    c.handle_timeout(t0 + FILLER_AFTER);
    assert_eq!(spoken(&drain(&mut c))[0].1, FILLER);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn words_while_tools_run_join_the_history_after_the_answers() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::ToolCalls(vec![ToolCall {
            id: "t".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        }])),
    );
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    drain(&mut c);
    assert!(caller_says(&mut c, ms(t0, 500), ms(t0, 600), "Also my address changed.").is_empty());
    c.handle_tool_answer(ms(t0, 700), "t", Ok(json!({})));
    let (_, request) = chat_of(&drain(&mut c));
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::Assistant, Role::Tool, Role::User]
    );
}

#[test]
fn a_transfer_goes_to_the_named_destination() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::ToolCalls(vec![ToolCall {
            id: "x".into(),
            name: crate::tools::TRANSFER_CALL.into(),
            arguments: r#"{"destination": "sales"}"#.into(),
        }])),
    );
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    assert!(matches!(
        drain(&mut c).as_slice(),
        [Action::Transfer { destination, .. }] if destination.to == "+14155550100"
    ));
}

#[test]
fn what_was_heard_is_whole_words_in_proportion() {
    assert_eq!(
        heard_part("one two three four", 9, 18, true, &[]),
        "one two"
    );
    assert_eq!(
        heard_part("one two three four", 18, 18, true, &[]),
        "one two three four"
    );
    assert_eq!(heard_part("one two", 0, 10, true, &[]), "");
}

/// Word times as a synthesiser gives them: (word, start ms, end ms).
fn timed(words: &[(&str, u64, u64)]) -> Vec<SpokenWord> {
    words
        .iter()
        .map(|&(word, start, end)| SpokenWord {
            word: word.into(),
            start: Duration::from_millis(start),
            end: Duration::from_millis(end),
        })
        .collect()
}

#[test]
fn with_word_times_what_was_heard_is_the_words_whose_audio_was_played() {
    // A pause after the first word: the share of the characters would say otherwise.
    let text = "Yes I can extraordinarily";
    let words = timed(&[
        ("Yes", 0, 300),
        ("I", 1300, 1400),
        ("can", 1450, 1700),
        ("extraordinarily", 1750, 2500),
    ]);
    // 900 ms of 2.5 s played (16 kHz): the first word's audio ended, the pause followed.
    assert_eq!(heard_part(text, 14_400, 40_000, true, &words), "Yes");
    assert_eq!(heard_part(text, 14_400, 40_000, true, &[]), "Yes I can");
    // A word cut in its middle was not heard.
    assert_eq!(heard_part(text, 25_600, 40_000, true, &words), "Yes I");
    assert_eq!(heard_part(text, 40_000, 40_000, true, &words), text);
    assert_eq!(heard_part(text, 0, 40_000, true, &words), "");
}

#[test]
fn speech_per_line_continues_one_segment_and_cuts_it_by_its_word_times() {
    let t0 = Instant::now();
    let mut c = Conversation::new(ConversationConfig {
        speech_per_line: true,
        ..config(Some("Hi, this is Ava."))
    });
    c.handle_answered(t0);
    let opening = drain(&mut c);
    let Some(Action::Speak { segment: first, .. }) = opening.first() else {
        panic!("{opening:?}");
    };
    let first = *first;
    // The first message is a line of one piece: spoken, then ended.
    assert_eq!(
        opening,
        [
            Action::Speak {
                segment: first,
                text: "Hi, this is Ava.".into()
            },
            Action::EndSpeech { segment: first }
        ]
    );
    c.handle_speech_audio(t0, first, 16_000);
    c.handle_speech_done(t0, first, Ok(()));
    c.handle_played(ms(t0, 1000), first);
    let actions = caller_says(&mut c, ms(t0, 2000), ms(t0, 2100), "What do you sell?");
    let (id, _) = chat_of(&actions);
    c.handle_chat(
        ms(t0, 2200),
        id,
        Ok(ChatEvent::TextDelta("We sell bikes. Red ones and".into())),
    );
    c.handle_chat(
        ms(t0, 2300),
        id,
        Ok(ChatEvent::TextDelta(" blue ones. Want one?".into())),
    );
    let pieces = spoken(&drain(&mut c));
    let segment = pieces[0].0;
    assert!(segment != first);
    // Every piece of the answer continues the line's one segment.
    assert_eq!(
        pieces,
        [
            (segment, "We sell bikes.".to_owned()),
            (segment, "Red ones and blue ones.".to_owned())
        ]
    );
    c.handle_speech_audio(ms(t0, 2400), segment, 32_000);
    c.handle_speech_words(
        segment,
        timed(&[
            ("We", 0, 200),
            ("sell", 250, 500),
            ("bikes.", 550, 1000),
            ("Red", 1100, 1300),
            ("ones", 1350, 1600),
            ("and", 1650, 1800),
            ("blue", 1850, 2100),
        ]),
    );
    // The caller cuts in 1.7 s into the line's audio: "and" was not over yet.
    c.handle_barge_in(ms(t0, 4200), Some(segment), 27_200);
    assert_eq!(drain(&mut c), [Action::CancelChat, Action::StopSpeaking]);
    let agent = c.transcript().filter(|l| l.role == "agent").last().unwrap();
    assert_eq!(agent.text, "We sell bikes. Red ones");
    assert!(agent.interrupted);
    assert_eq!(
        c.history().last().unwrap().content.as_deref(),
        Some("We sell bikes. Red ones")
    );
}

#[test]
fn speech_per_line_ends_the_segment_when_the_answer_is_complete_and_retries_it_whole() {
    let t0 = Instant::now();
    let mut c = Conversation::new(ConversationConfig {
        speech_per_line: true,
        ..config(None)
    });
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(t0, id, Ok(ChatEvent::TextDelta("Hello there. How".into())));
    c.handle_chat(t0, id, Ok(ChatEvent::TextDelta(" can I help?".into())));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    let actions = drain(&mut c);
    let segment = spoken(&actions)[0].0;
    assert_eq!(
        actions,
        [
            Action::Speak {
                segment,
                text: "Hello there.".into()
            },
            Action::Speak {
                segment,
                text: "How can I help?".into()
            },
            Action::EndSpeech { segment },
        ]
    );
    // Its synthesis failed before any audio: asked again whole, and ended.
    c.handle_speech_done(ms(t0, 100), segment, Err(server_error(503)));
    assert_eq!(
        drain(&mut c),
        [
            Action::Speak {
                segment,
                text: "Hello there. How can I help?".into()
            },
            Action::EndSpeech { segment },
        ]
    );
}

#[test]
fn the_filler_is_heard_but_kept_out_of_the_models_history() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::ToolCalls(vec![ToolCall {
            id: "slow".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        }])),
    );
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    drain(&mut c);
    c.handle_timeout(t0 + FILLER_AFTER);
    assert_eq!(spoken(&drain(&mut c))[0].1, FILLER);
    c.handle_tool_answer(ms(t0, 2000), "slow", Ok(json!({})));
    let (_, request) = chat_of(&drain(&mut c));
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::Assistant, Role::Tool]);
    assert!(
        c.transcript()
            .any(|l| l.role == "agent" && l.text == FILLER)
    );
}

#[test]
fn a_retried_answer_does_not_repeat_what_the_failed_one_began() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(None));
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(t0, id, Ok(ChatEvent::TextDelta("Sure, I".into())));
    let lost = AgentError::Unreachable {
        provider: "llm".into(),
        detail: "reset".into(),
    };
    c.handle_chat(t0, id, Err(lost));
    chat_of(&drain(&mut c));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::TextDelta(
            "Sure, I can help you with that.".into(),
        )),
    );
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    let said: Vec<String> = spoken(&drain(&mut c)).into_iter().map(|(_, t)| t).collect();
    assert_eq!(said.join(" "), "Sure, I can help you with that.");
}

/// A conversation whose first message the caller cut off at 500 ms (a quarter of it heard).
fn opening_cut_off(t0: Instant) -> Conversation {
    let mut c = Conversation::new(config(Some("Let me tell you about our plans today.")));
    c.handle_answered(t0);
    let opening = spoken(&drain(&mut c));
    c.handle_speech_audio(t0, opening[0].0, 32_000);
    c.handle_barge_in(ms(t0, 500), Some(opening[0].0), 8000);
    drain(&mut c);
    c
}

#[test]
fn an_interruption_that_was_no_words_lets_the_agent_go_on() {
    let t0 = Instant::now();
    let mut c = opening_cut_off(t0);
    c.handle_utterance(ms(t0, 900), ms(t0, 900), vec![0; 3200], false);
    let Some(Action::Transcribe { utterance, .. }) = c.poll_action() else {
        panic!("transcribed")
    };
    c.handle_transcript(ms(t0, 1000), utterance, Ok(String::new()));
    chat_of(&drain(&mut c));
}

/// A click cuts the agent off at its onset, then is dropped as too short to be an utterance:
/// no transcript will come, and the agent goes on rather than waiting in silence.
#[test]
fn an_interruption_too_short_to_be_an_utterance_lets_the_agent_go_on() {
    let t0 = Instant::now();
    let mut c = opening_cut_off(t0);
    c.handle_dropped_start(ms(t0, 700));
    chat_of(&drain(&mut c));
    // Once: a second dropped start, with nothing cut, asks nothing.
    c.handle_dropped_start(ms(t0, 900));
    assert!(drain(&mut c).is_empty());
}

#[test]
fn words_while_the_answer_streams_join_the_history_after_it() {
    let t0 = Instant::now();
    let mut c = Conversation::new(ConversationConfig {
        barge_in_off: true,
        ..config(None)
    });
    c.handle_answered(t0);
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::TextDelta("Let me check that for you. ".into())),
    );
    let pieces = spoken(&drain(&mut c));
    c.handle_speech_audio(t0, pieces[0].0, 1600);
    c.handle_utterance(ms(t0, 300), ms(t0, 300), vec![0; 3200], true);
    let Some(Action::Transcribe { utterance, .. }) = c.poll_action() else {
        panic!("transcribed")
    };
    c.handle_transcript(ms(t0, 400), utterance, Ok("It's order 42.".into()));
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::ToolCalls(vec![ToolCall {
            id: "t".into(),
            name: "lookup".into(),
            arguments: "{}".into(),
        }])),
    );
    c.handle_chat(
        t0,
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    drain(&mut c);
    c.handle_tool_answer(ms(t0, 600), "t", Ok(json!({})));
    let (_, request) = chat_of(&drain(&mut c));
    let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::Assistant, Role::Tool, Role::User]
    );
}

/// The opening said and heard: the conversation waits for the caller.
fn opened(c: &mut Conversation, t0: Instant) {
    c.handle_answered(t0);
    let opening = drain(c);
    play_all(c, t0, &opening, 16_000);
    assert!(!c.agent_speaking());
}

#[test]
fn key_presses_go_to_the_model_after_a_pause_as_the_callers_message() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Press 1 to confirm.")));
    opened(&mut c, t0);
    c.handle_dtmf(ms(t0, 3000), '1');
    c.handle_dtmf(ms(t0, 3400), '2');
    assert_eq!(c.poll_timeout(), Some(ms(t0, 3400) + KEYS_PAUSE));
    c.handle_timeout(ms(t0, 3400) + KEYS_PAUSE - Duration::from_millis(1));
    assert!(drain(&mut c).is_empty(), "the caller may press more");
    c.handle_timeout(ms(t0, 3400) + KEYS_PAUSE);
    let (_, request) = chat_of(&drain(&mut c));
    let last = request.messages.last().unwrap();
    assert_eq!(last.role, Role::User);
    assert_eq!(last.content.as_deref(), Some("[the caller pressed 1 2]"));
    let caller: Vec<_> = c.transcript().filter(|l| l.role == "caller").collect();
    assert_eq!(caller.len(), 1);
    assert_eq!(caller[0].text, "[the caller pressed 1 2]");
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn a_hash_ends_the_keys_at_once_and_masking_hides_them_from_the_transcript_only() {
    let t0 = Instant::now();
    let mut c = Conversation::new(ConversationConfig {
        mask_dtmf: true,
        ..config(Some("Your PIN, then the hash key."))
    });
    opened(&mut c, t0);
    for (n, digit) in "42#".chars().enumerate() {
        c.handle_dtmf(ms(t0, 2000 + 200 * n as u64), digit);
    }
    let (_, request) = chat_of(&drain(&mut c));
    assert_eq!(
        request.messages.last().unwrap().content.as_deref(),
        Some("[the caller pressed 4 2 #]")
    );
    let caller: Vec<_> = c.transcript().filter(|l| l.role == "caller").collect();
    assert_eq!(caller[0].text, "[the caller pressed ****]");
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn keys_pressed_while_the_agent_speaks_are_answered_once_it_finishes() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Press 1 for sales, 2 for support.")));
    c.handle_answered(t0);
    let opening = drain(&mut c);
    c.handle_dtmf(ms(t0, 500), '2');
    c.handle_timeout(ms(t0, 500) + KEYS_PAUSE);
    assert!(
        drain(&mut c).is_empty(),
        "no answer over the agent's own speech"
    );
    play_all(&mut c, ms(t0, 2500), &opening, 16_000);
    let (_, request) = chat_of(&drain(&mut c));
    assert_eq!(
        request.messages.last().unwrap().content.as_deref(),
        Some("[the caller pressed 2]")
    );
}

/// The caller's utterance out for transcription, with the model asked on its interim words.
fn early_guess(c: &mut Conversation, at: Instant, guess: &str) -> (u64, u64) {
    c.handle_utterance(at, at, vec![100; 3200], false);
    let actions = drain(c);
    let Some(Action::Transcribe { utterance, .. }) = actions.first() else {
        panic!("expected a transcription, got {actions:?}");
    };
    c.handle_early_words(at, guess);
    let (id, request) = chat_of(&drain(c));
    assert_eq!(
        request.messages.last().unwrap().content.as_deref(),
        Some(guess)
    );
    (*utterance, id)
}

#[test]
fn an_answer_asked_on_interim_words_is_kept_when_the_final_words_match() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Hi, this is Ava.")));
    opened(&mut c, t0);
    let (utterance, id) = early_guess(&mut c, ms(t0, 3000), "i'd like a table");
    c.handle_chat(ms(t0, 3100), id, Ok(ChatEvent::TextDelta("Sure. ".into())));
    assert!(drain(&mut c).is_empty(), "held until the final words");
    c.handle_transcript(ms(t0, 3300), utterance, Ok("I'd like a table.".into()));
    let actions = drain(&mut c);
    assert_eq!(spoken(&actions).len(), 1, "{actions:?}");
    assert_eq!(spoken(&actions)[0].1, "Sure.");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Chat { .. } | Action::CancelChat)),
        "{actions:?}"
    );
    // The history has the final words; the first token counts from the early ask.
    assert!(
        c.history()
            .iter()
            .any(|m| m.content.as_deref() == Some("I'd like a table."))
    );
    assert_eq!(
        c.stats().llm_first_token.all(),
        [Duration::from_millis(100)]
    );
    c.handle_chat(
        ms(t0, 3400),
        id,
        Ok(ChatEvent::TextDelta("For how many?".into())),
    );
    c.handle_chat(
        ms(t0, 3500),
        id,
        Ok(ChatEvent::Finished {
            reason: None,
            usage: None,
        }),
    );
    assert_eq!(spoken(&drain(&mut c))[0].1, "For how many?");
}

#[test]
fn an_answer_asked_on_interim_words_is_dropped_when_the_final_words_differ() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Hi, this is Ava.")));
    opened(&mut c, t0);
    let (utterance, early) = early_guess(&mut c, ms(t0, 3000), "I'd like");
    c.handle_chat(
        ms(t0, 3100),
        early,
        Ok(ChatEvent::TextDelta("Sure. ".into())),
    );
    c.handle_transcript(ms(t0, 3300), utterance, Ok("I'd like to cancel.".into()));
    let actions = drain(&mut c);
    assert_eq!(actions.first(), Some(&Action::CancelChat), "{actions:?}");
    let (id, request) = chat_of(&actions);
    assert_ne!(id, early);
    assert_eq!(
        request.messages.last().unwrap().content.as_deref(),
        Some("I'd like to cancel.")
    );
    assert!(spoken(&actions).is_empty());
    // What the dropped request still sends is ignored.
    c.handle_chat(
        ms(t0, 3400),
        early,
        Ok(ChatEvent::TextDelta("Great. ".into())),
    );
    assert!(drain(&mut c).is_empty());
}

/// Voice-to-voice counts from the caller's last voiced frame, not from the moment endpointing
/// decided the utterance was over (its silence is part of what the caller waits through).
#[test]
fn voice_to_voice_counts_from_the_callers_last_voiced_frame() {
    let t0 = Instant::now();
    let mut c = Conversation::new(config(Some("Hello.")));
    opened(&mut c, t0);
    c.handle_utterance(ms(t0, 3000), ms(t0, 2400), vec![100; 3200], false);
    let actions = drain(&mut c);
    let Some(Action::Transcribe { utterance, .. }) = actions.first() else {
        panic!("expected a transcription, got {actions:?}");
    };
    c.handle_transcript(ms(t0, 3200), *utterance, Ok("A quote, please.".into()));
    let (id, _) = chat_of(&drain(&mut c));
    c.handle_chat(
        ms(t0, 3400),
        id,
        Ok(ChatEvent::TextDelta(
            "Sure thing, happy to help you. What".into(),
        )),
    );
    let said = spoken(&drain(&mut c));
    let [(segment, _)] = said.as_slice() else {
        panic!("expected one piece, got {said:?}");
    };
    assert!(c.handle_speech_audio(ms(t0, 3500), *segment, 1600));
    assert_eq!(
        c.stats().to_json()["voice_to_voice_ms"]["max"],
        Value::Null,
        "queued is not yet heard"
    );
    assert!(
        !c.handle_speech_audio(ms(t0, 3510), *segment, 1600),
        "more of the same answer"
    );
    // The first frame left on the media worker's tick after it was queued.
    c.handle_answer_on_wire(ms(t0, 3516));
    c.handle_answer_on_wire(ms(t0, 3600));
    let stats = c.stats().to_json();
    assert_eq!(
        stats["voice_to_voice_ms"]["max"], 1116,
        "counted once, to the wire"
    );
    assert_eq!(stats["stt_ms"]["max"], 200);
}
