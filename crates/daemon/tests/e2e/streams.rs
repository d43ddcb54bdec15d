//! A Twilio Media Streams app as the brain, end to end: a real daemon dials the callee (baresip
//! recording what it hears, or SIPp pressing RFC 4733 keys) and opens the websocket to a small
//! Media Streams app on loopback. The app is written here against the protocol as Twilio
//! documents it (JSON text frames: `connected`, `start`, `media`, `dtmf`, `mark`, `stop`; from
//! the app `media`, `mark`, `clear`) and speaks the real wire; it ends calls through the REST
//! shim, as such apps end them through Twilio's REST API.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dialtone_test_support::audio::{sine, tone_amplitude};
use dialtone_test_support::media::{Baresip, write_wav};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use super::agent::trunk_to;
use super::{KEY, World, org_with_key, wait_final, world};

type Socket = WebSocketStream<TcpStream>;

/// The app's websocket: a listener on loopback and the `Authorization` header of the upgrade
/// it accepts.
async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/media-stream", listener.local_addr().unwrap());
    (listener, url)
}

async fn accept(listener: &TcpListener) -> (Socket, Option<String>) {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
        .await
        .expect("the engine connects")
        .unwrap();
    let mut auth = None;
    #[allow(
        clippy::result_large_err,
        reason = "the error response is the type tungstenite's callback returns"
    )]
    let callback = |req: &Request, res: Response| {
        auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(res)
    };
    let socket = tokio_tungstenite::accept_hdr_async(tcp, callback)
        .await
        .unwrap();
    (socket, auth)
}

/// The next event, as JSON (`None` once the socket is closed).
async fn next_event(ws: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .expect("an event within 20 s")?
            .ok()?;
        match message {
            Message::Text(text) => return Some(serde_json::from_str(text.as_str()).unwrap()),
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

async fn send(ws: &mut Socket, event: Value) {
    ws.send(Message::text(event.to_string())).await.unwrap();
}

/// What an app tracks of the stream: every `media` checked against the one before (sequence
/// numbers, chunks and timestamps each one step on), its audio kept.
#[derive(Default)]
struct Inbound {
    sequence: u64,
    chunk: u64,
    audio: Vec<i16>,
}

impl Inbound {
    /// Checks `event`'s sequence number; for `media`, its chunk, timestamp and audio.
    fn take(&mut self, event: &Value) {
        let sequence: u64 = event["sequenceNumber"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            sequence,
            self.sequence + 1,
            "sequence numbers in order: {event}"
        );
        self.sequence = sequence;
        if event["event"] != "media" {
            return;
        }
        let media = &event["media"];
        assert_eq!(media["track"], "inbound");
        assert_eq!(media["chunk"], (self.chunk + 1).to_string(), "{event}");
        assert_eq!(media["timestamp"], (self.chunk * 20).to_string(), "{event}");
        self.chunk += 1;
        let ulaw = STANDARD.decode(media["payload"].as_str().unwrap()).unwrap();
        assert_eq!(ulaw.len(), 160, "20 ms of µ-law at 8 kHz");
        let mut pcm = [0i16; 160];
        dialtone_codec::G711::new(dialtone_codec::G711Law::Mu).decode(&ulaw, &mut pcm);
        self.audio.extend_from_slice(&pcm);
    }
}

/// `connected` then `start`; `start`'s body.
async fn opening(ws: &mut Socket, inbound: &mut Inbound) -> Value {
    let connected = next_event(ws).await.unwrap();
    assert_eq!(
        connected,
        json!({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    );
    let start = next_event(ws).await.unwrap();
    assert_eq!(start["event"], "start", "{start}");
    inbound.take(&start);
    assert_eq!(start["streamSid"], start["start"]["streamSid"]);
    start["start"].clone()
}

/// `ms` of a `hz` tone as µ-law at 8 kHz, in base64 chunks of `chunk` bytes.
fn tone(hz: f64, ms: usize, chunk: usize) -> Vec<String> {
    let mut pcm = vec![0i16; ms * 8];
    sine(8000, hz, 8000.0, 0, &mut pcm);
    let ulaw: Vec<u8> = pcm
        .iter()
        .map(|s| dialtone_codec::linear_to_ulaw(*s))
        .collect();
    ulaw.chunks(chunk).map(|c| STANDARD.encode(c)).collect()
}

/// The REST calls an app makes: the result, and the hang-up through the Twilio shim.
struct Rest {
    base: String,
    http: reqwest::Client,
}

impl Rest {
    async fn post_result(&self, call: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/v1/calls/{call}/result", self.base))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// `Status=completed` on `account`'s call `call` with `key` as the basic-auth password.
    async fn complete(
        &self,
        account: &str,
        call: &str,
        key: &str,
        form: &[(&str, &str)],
    ) -> (u16, Value) {
        let resp = self
            .http
            .post(format!(
                "{}/2010-04-01/Accounts/{account}/Calls/{call}.json",
                self.base
            ))
            .basic_auth(account, Some(key))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(form))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }
}

/// `form` as an `application/x-www-form-urlencoded` body.
fn form_body(form: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    form.iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn rest(w: &World) -> Rest {
    Rest {
        base: w.api.base.clone(),
        http: reqwest::Client::new(),
    }
}

/// 20 ms frames of `samples` (at `rate`) carrying `hz`.
fn frames_with(samples: &[i16], rate: u32, hz: f64) -> usize {
    samples
        .chunks_exact(rate as usize / 50)
        .filter(|f| tone_amplitude(f, rate, hz) > 2000.0)
        .count()
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// What the app of the first test saw.
struct Seen {
    start: Value,
    authorization: Option<String>,
    /// From sending the 1 s tone and its mark to the mark's echo.
    mark_after: Duration,
    /// `media` chunks that came between `clear` and the echo of the mark it flushed.
    media_before_flushed_mark: usize,
    /// The answers of the REST calls: bad result, good result, wrong key, another
    /// organisation's key, unsupported parameter, the hang-up.
    answers: Vec<(u16, Value)>,
    inbound: Inbound,
}

/// The app: checks the opening, echoes the caller's audio for 1.5 s, plays a 1 s tone of
/// 600 Hz and a mark, then 3 s of 800 Hz and a mark, which it clears after 1 s; posts its
/// result; hangs up through the REST shim (after trying a wrong key, another organisation's
/// key and an unsupported parameter); reads up to `stop`.
async fn echo_tone_clear_app(
    mut ws: Socket,
    authorization: Option<String>,
    rest: Rest,
    other_key: String,
) -> Seen {
    let mut inbound = Inbound::default();
    let start = opening(&mut ws, &mut inbound).await;
    let sid = start["streamSid"].clone();
    let (account, call) = (
        start["accountSid"].as_str().unwrap().to_owned(),
        start["callSid"].as_str().unwrap().to_owned(),
    );
    // Echo.
    while inbound.chunk < 75 {
        let event = next_event(&mut ws).await.unwrap();
        inbound.take(&event);
        if event["event"] == "media" {
            send(&mut ws, json!({"event": "media", "streamSid": sid, "media": {"payload": event["media"]["payload"]}})).await;
        }
    }
    // A tone, sent at once in uneven chunks, and its mark.
    for payload in tone(600.0, 1000, 640) {
        send(
            &mut ws,
            json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}),
        )
        .await;
    }
    send(
        &mut ws,
        json!({"event": "mark", "streamSid": sid, "mark": {"name": "tone"}}),
    )
    .await;
    let sent = Instant::now();
    let mark_after = loop {
        let event = next_event(&mut ws).await.unwrap();
        inbound.take(&event);
        if event["event"] == "mark" {
            assert_eq!(event["mark"]["name"], "tone");
            break sent.elapsed();
        }
    };
    // A long tone and its mark, cleared after a second of the media clock.
    for payload in tone(800.0, 3000, 160) {
        send(
            &mut ws,
            json!({"event": "media", "streamSid": sid, "media": {"payload": payload}}),
        )
        .await;
    }
    send(
        &mut ws,
        json!({"event": "mark", "streamSid": sid, "mark": {"name": "long"}}),
    )
    .await;
    let cleared_at = inbound.chunk + 50;
    while inbound.chunk < cleared_at {
        let event = next_event(&mut ws).await.unwrap();
        inbound.take(&event);
        assert_ne!(
            event["event"], "mark",
            "the long tone's mark is not due: {event}"
        );
    }
    send(&mut ws, json!({"event": "clear", "streamSid": sid})).await;
    let mut media_before_flushed_mark = 0;
    loop {
        let event = next_event(&mut ws).await.unwrap();
        inbound.take(&event);
        if event["event"] == "mark" {
            assert_eq!(event["mark"]["name"], "long");
            break;
        }
        media_before_flushed_mark += 1;
    }
    let mut answers = vec![
        rest.post_result(&call, json!({"result": {"interested": "very"}}))
            .await,
        rest.post_result(&call, json!({"result": {"interested": true}}))
            .await,
        rest.complete(&account, &call, "wrong-key", &[("Status", "completed")])
            .await,
        rest.complete(&account, &call, &other_key, &[("Status", "completed")])
            .await,
        rest.complete(&account, &call, KEY, &[("Twiml", "<Response/>")])
            .await,
    ];
    answers.push(
        rest.complete(&account, &call, KEY, &[("Status", "completed")])
            .await,
    );
    while let Some(event) = next_event(&mut ws).await {
        inbound.take(&event);
        if event["event"] == "stop" {
            assert_eq!(
                event["stop"],
                json!({"accountSid": account, "callSid": call})
            );
            break;
        }
    }
    Seen {
        start,
        authorization,
        mark_after,
        media_before_flushed_mark,
        answers,
        inbound,
    }
}

/// An unmodified-protocol app holds a call through Dialtone: the caller's tone reaches it in
/// ordered 20 ms chunks on the media clock and comes back (audio both ways, checked on
/// baresip's recording); a mark comes back once the tone before it has played; `clear` stops
/// the tone under way and flushes its mark before any further chunk; the result is posted
/// (checked against `returns`) and the call hung up through the Twilio REST shim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_streams_app_holds_a_call_with_audio_both_ways_marks_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let mut callee_audio = vec![0i16; 8000 * 20];
    sine(8000, 1000.0, 8000.0, 0, &mut callee_audio[..8000 * 3 / 2]);
    let wav = dir.path().join("callee.wav");
    write_wav(&wav, 8000, &callee_audio).unwrap();
    let baresip = Baresip::callee(&wav).unwrap();
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (other_org, other_key) = org_with_key(&w.api, "other", json!({})).await;
    let (listener, url) = listen().await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": url, "brain_headers": {"Authorization": "Bearer app-secret"},
                "returns": {"type": "object", "properties": {"interested": {"type": "boolean"}}, "required": ["interested"]}}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    assert_eq!(
        agent["brain_headers"],
        json!({"Authorization": "***"}),
        "the value is write-only"
    );
    let (_, read) = w.api.get(&format!("/v1/agents/{}", w.agent_id)).await;
    assert_eq!(read["brain_headers"], json!({"Authorization": "***"}));
    let (s, refused) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain_headers": {"Sec-WebSocket-Protocol": "x"}}),
        )
        .await;
    assert_eq!(s, 400, "{refused}");
    assert_eq!(refused["error"]["field"], "brain_headers", "{refused}");
    let rest = rest(&w);
    let app = tokio::spawn(async move {
        let (ws, authorization) = accept(&listener).await;
        echo_tone_clear_app(ws, authorization, rest, other_key).await
    });
    let id = w
        .dispatch(json!({"context": {"name": "Ada", "visits": 3}}))
        .await;
    let seen = tokio::time::timeout(Duration::from_secs(60), app)
        .await
        .expect("the app finishes")
        .unwrap();
    let record = wait_final(&w.api, &id).await;

    assert_eq!(seen.authorization.as_deref(), Some("Bearer app-secret"));
    let start = &seen.start;
    assert!(start["streamSid"].as_str().unwrap().starts_with("MZ"));
    assert_eq!(start["callSid"], id.as_str());
    // The organisation's id: the shim, which takes only the key's own organisation as the
    // account, hung up with it.
    assert!(uuid_like(start["accountSid"].as_str().unwrap()));
    assert_ne!(start["accountSid"].as_str(), Some(other_org.as_str()));
    assert_eq!(start["tracks"], json!(["inbound"]));
    assert_eq!(
        start["mediaFormat"],
        json!({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1})
    );
    assert_eq!(
        start["customParameters"],
        json!({"name": "Ada", "visits": "3"})
    );
    // The callee's tone reached the app.
    assert!(
        frames_with(&seen.inbound.audio, 8000, 1000.0) >= 40,
        "the app heard the callee's tone"
    );
    // The mark came back once the second of tone had played, not before.
    assert!(
        seen.mark_after >= Duration::from_millis(900),
        "{:?}",
        seen.mark_after
    );
    assert_eq!(
        seen.media_before_flushed_mark, 0,
        "clear echoes the mark at once"
    );
    let codes: Vec<u16> = seen.answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(codes, [400, 200, 401, 404, 400, 200], "{:#?}", seen.answers);
    assert_eq!(seen.answers[0].1["error"]["field"], "result");
    // The shim refuses in Twilio's shape (its clients read `code`, `message`, `more_info`,
    // `status`), naming the parameter in `details`.
    for (i, code) in [(2, 20003), (3, 20404), (4, 20001)] {
        let (status, body) = &seen.answers[i];
        assert_eq!(body["code"], code, "{body}");
        assert_eq!(body["status"], *status, "{body}");
        assert_eq!(
            body["more_info"],
            format!("https://www.twilio.com/docs/errors/{code}"),
            "{body}"
        );
        assert!(
            !body["message"].as_str().unwrap_or_default().is_empty(),
            "{body}"
        );
    }
    assert_eq!(seen.answers[4].1["details"]["field"], "Twiml");
    let hung_up = &seen.answers[5].1;
    assert_eq!(hung_up["sid"], id.as_str());
    assert_eq!(hung_up["account_sid"], start["accountSid"]);
    assert!(
        ["in-progress", "completed"].contains(&hung_up["status"].as_str().unwrap()),
        "{hung_up}"
    );

    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(record["end_reason"]["by"], "api", "{record:#}");
    assert_eq!(record["result"], json!({"interested": true}), "{record:#}");
    assert_eq!(record["result_error"], Value::Null);
    // What the callee heard: its own tone echoed, the whole 600 Hz second, and about the
    // second of 800 Hz before the clear, far from the three seconds sent.
    let (rate, heard) = baresip
        .received_pcm(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}: {}", baresip.log()));
    let echoed = frames_with(&heard, rate, 1000.0);
    let toned = frames_with(&heard, rate, 600.0);
    let cut = frames_with(&heard, rate, 800.0);
    assert!(echoed >= 40, "echo heard in {echoed} frames");
    assert!(
        (45..=55).contains(&toned),
        "the 1 s tone heard in {toned} frames"
    );
    assert!(
        (35..=70).contains(&cut),
        "the cleared tone heard in {cut} frames"
    );
    // Both directions of the bridge were timed, in histograms with buckets.
    let metrics = w.api.metrics().await;
    for name in [
        "dialtone_media_streams_inbound_seconds",
        "dialtone_media_streams_outbound_seconds",
    ] {
        let count = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
            .and_then(|n| n.trim().parse::<u64>().ok());
        assert!(count >= Some(1), "{name}: {metrics}");
        assert!(
            metrics.contains(&format!("{name}_bucket{{le=\"0.02\"}}")),
            "{name}: {metrics}"
        );
    }
    w.finish().await;
}

/// The callee's RFC 4733 key presses (SIPp's captures) reach the app as `dtmf` events; a
/// result that breaks `returns` is refused naming `result`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_streams_app_hears_rfc4733_key_presses() {
    use dialtone_test_support::media::{sipp_dtmf_captures, sipp_key_presses};
    let presses = sipp_key_presses(&sipp_dtmf_captures().unwrap(), "12#");
    let w = world(
        Some("callee_presses_digits.xml"),
        &[("listen_ms", "1000"), ("presses", presses.as_str())],
    )
    .await;
    let (listener, url) = listen().await;
    let (s, agent) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": url, "returns": {"type": "object", "properties": {"digits": {"type": "string", "pattern": "^[0-9]+$"}}, "required": ["digits"]}}),
        )
        .await;
    assert_eq!(s, 200, "{agent}");
    let rest = rest(&w);
    let app = tokio::spawn(async move {
        let (mut ws, _) = accept(&listener).await;
        let mut inbound = Inbound::default();
        let start = opening(&mut ws, &mut inbound).await;
        let (account, call) = (
            start["accountSid"].as_str().unwrap().to_owned(),
            start["callSid"].as_str().unwrap().to_owned(),
        );
        let mut digits = String::new();
        while !digits.ends_with('#') {
            let event = next_event(&mut ws).await.expect("the keys before the end");
            inbound.take(&event);
            if event["event"] == "dtmf" {
                assert_eq!(event["dtmf"]["track"], "inbound_track", "{event}");
                digits.push_str(event["dtmf"]["digit"].as_str().unwrap());
            }
        }
        // The last key's RFC 4733 end packets are still coming (they are sent three times):
        // the app lets them finish before it hangs up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let refused = rest
            .post_result(&call, json!({"result": {"digits": digits.clone()}}))
            .await;
        let kept = digits.trim_end_matches('#').to_owned();
        let posted = rest
            .post_result(&call, json!({"result": {"digits": kept}}))
            .await;
        let hung_up = rest
            .complete(&account, &call, KEY, &[("Status", "completed")])
            .await;
        (digits, refused, posted.0, hung_up.0)
    });
    let id = w.dispatch(json!({})).await;
    let (digits, refused, posted, hung_up) = tokio::time::timeout(Duration::from_secs(60), app)
        .await
        .expect("the app finishes")
        .unwrap();
    assert_eq!(digits, "12#");
    assert_eq!(
        (refused.0, refused.1["error"]["field"].as_str()),
        (400, Some("result")),
        "{refused:?}"
    );
    assert_eq!((posted, hung_up), (200, 200));
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["result"], json!({"digits": "12"}), "{record:#}");
    assert_eq!(record["end_reason"]["by"], "api", "{record:#}");
    w.finish().await;
}

/// What [`call_whose_app_closes`] leaves: the callee (holding what it heard) with the silence it
/// plays, the world, and the call's final record.
struct ClosedByApp {
    baresip: Baresip,
    _callee_audio: tempfile::TempDir,
    w: World,
    record: Value,
}

/// A call to a silent baresip whose Media Streams app closes its websocket with `code` and
/// `reason` after ten media chunks.
async fn call_whose_app_closes(
    code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode,
    reason: &'static str,
) -> ClosedByApp {
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("callee.wav");
    write_wav(&wav, 8000, &vec![0i16; 8000 * 20]).unwrap();
    let baresip = Baresip::callee(&wav).unwrap();
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (listener, url) = listen().await;
    let (s, agent) = w
        .api
        .patch(&format!("/v1/agents/{}", w.agent_id), json!({"brain": url}))
        .await;
    assert_eq!(s, 200, "{agent}");
    let app = tokio::spawn(async move {
        let (mut ws, _) = accept(&listener).await;
        let mut inbound = Inbound::default();
        opening(&mut ws, &mut inbound).await;
        while inbound.chunk < 10 {
            let event = next_event(&mut ws).await.unwrap();
            inbound.take(&event);
        }
        ws.close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))
        .await
        .unwrap();
    });
    let id = w.dispatch(json!({})).await;
    tokio::time::timeout(Duration::from_secs(30), app)
        .await
        .expect("the app finishes")
        .unwrap();
    let record = wait_final(&w.api, &id).await;
    ClosedByApp {
        baresip,
        _callee_audio: dir,
        w,
        record,
    }
}

/// An app that closes mid-call is never dead air: the caller hears the engine's apology and
/// the call ends with `brain_error`, the record naming the close code. An app that cannot be
/// reached at all is the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_closes_or_is_unreachable_leaves_an_apology_and_brain_error() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let ClosedByApp {
        baresip,
        _callee_audio,
        w,
        record,
    } = call_whose_app_closes(CloseCode::Error, "boom").await;
    assert_eq!(
        (
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some("brain_error"), Some("agent")),
        "{record:#}"
    );
    let why = record["result_error"].as_str().unwrap();
    assert!(
        why.contains("close code 1011") && why.contains("boom"),
        "{why}"
    );
    let (_, samples) = baresip
        .received_pcm(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}: {}", baresip.log()));
    let voiced = samples
        .chunks_exact(160)
        .filter(|f| dialtone_media::level_dbfs(f) > -40.0)
        .count();
    assert!(
        voiced >= 25,
        "only {voiced} voiced frames: the apology was heard"
    );

    // Nothing listens: the same apology and end, the record saying it could not be reached.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("ws://{}/", closed.local_addr().unwrap());
    drop(closed);
    let (s, _) = w
        .api
        .patch(
            &format!("/v1/agents/{}", w.agent_id),
            json!({"brain": gone}),
        )
        .await;
    assert_eq!(s, 200);
    let id = w.dispatch(json!({})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["end_reason"]["code"], "brain_error", "{record:#}");
    let why = record["result_error"].as_str().unwrap();
    assert!(why.contains("could not be reached"), "{why}");
    w.finish().await;
}

/// Whether the record's transcript has the engine's apology.
fn said_apology(record: &Value) -> bool {
    record["transcript"].as_array().is_some_and(|lines| {
        lines
            .iter()
            .any(|l| l["text"].as_str().is_some_and(|t| t.contains("sorry")))
    })
}

/// An app that closes its stream normally (1000) ends it as under Twilio: no apology, the call
/// hangs up as `completed` with no `result_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_closes_its_stream_normally_ends_the_call_as_completed() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let ClosedByApp { w, record, .. } = call_whose_app_closes(CloseCode::Normal, "done").await;
    assert_eq!(
        (
            record["end_reason"]["code"].as_str(),
            record["end_reason"]["by"].as_str()
        ),
        (Some("completed"), Some("agent")),
        "{record:#}"
    );
    assert_eq!(record["result_error"], Value::Null, "{record:#}");
    assert!(!said_apology(&record), "{record:#}");
    w.finish().await;
}

/// Pipecat's bot (examples/media-streams/pipecat_bot.py, pipecat-ai from PyPI unmodified, from
/// scripts/pipecat-env.sh) on a free port; killed when dropped.
struct PipecatBot {
    child: std::process::Child,
    port: u16,
}

impl PipecatBot {
    fn start(api: &str, account: &str, hold_seconds: u32) -> PipecatBot {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = std::env::var("DIALTONE_PIPECAT_PYTHON").unwrap_or_else(|_| {
            let out = std::process::Command::new(root.join("scripts/pipecat-env.sh"))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        });
        let port = dialtone_test_support::free_port().unwrap();
        let child = std::process::Command::new(python)
            .arg(root.join("examples/media-streams/pipecat_bot.py"))
            .args([
                "--port",
                &port.to_string(),
                "--api",
                api,
                "--account",
                account,
            ])
            .args(["--key", KEY, "--hold", &hold_seconds.to_string()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        PipecatBot { child, port }
    }

    /// Waits until it listens (Pipecat's imports take a few seconds).
    async fn listening(&mut self) {
        for _ in 0..600 {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return;
            }
            assert!(self.child.try_wait().unwrap().is_none(), "the bot exited");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the Pipecat bot did not listen within 30 s");
    }
}

impl Drop for PipecatBot {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A real open-source Media Streams app runs unchanged: a Pipecat pipeline with its Twilio
/// serializer and FastAPI websocket transport hears the callee's tone and plays it back
/// (checked on baresip's recording), then ends its pipeline, and Pipecat's serializer hangs up
/// through the REST shim (its `base_url` pointed at Dialtone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipecat_bot_runs_unchanged_with_audio_both_ways_and_hangs_up_through_the_shim() {
    let dir = tempfile::tempdir().unwrap();
    let mut callee_audio = vec![0i16; 8000 * 20];
    sine(8000, 1000.0, 8000.0, 0, &mut callee_audio[..8000 * 2]);
    let wav = dir.path().join("callee.wav");
    write_wav(&wav, 8000, &callee_audio).unwrap();
    let baresip = Baresip::callee(&wav).unwrap();
    let w = world(None, &[]).await;
    trunk_to(&w.api, baresip.port).await;
    let (_, orgs) = w.api.get("/v1/organizations").await;
    let org = orgs["data"][0]["id"].as_str().unwrap().to_owned();
    let mut bot = PipecatBot::start(&w.api.base, &org, 4);
    bot.listening().await;
    let url = format!("ws://127.0.0.1:{}/media-stream", bot.port);
    let (s, agent) = w
        .api
        .patch(&format!("/v1/agents/{}", w.agent_id), json!({"brain": url}))
        .await;
    assert_eq!(s, 200, "{agent}");
    let id = w.dispatch(json!({"context": {"name": "Ada"}})).await;
    let record = wait_final(&w.api, &id).await;
    assert_eq!(record["status"], "completed", "{record:#}");
    assert_eq!(
        record["end_reason"]["by"], "api",
        "hung up by Pipecat's serializer: {record:#}"
    );
    assert_eq!(
        record["result_error"],
        Value::Null,
        "Pipecat's close after its hang-up is no failure: {record:#}"
    );
    assert!(
        !said_apology(&record),
        "no apology after Pipecat's normal close: {record:#}"
    );
    let talk = record["talk_duration_ms"].as_i64().unwrap();
    assert!(
        (3000..8000).contains(&talk),
        "held about the bot's 4 s: {talk} ms"
    );
    let (rate, heard) = baresip
        .received_pcm(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}: {}", baresip.log()));
    let echoed = frames_with(&heard, rate, 1000.0);
    assert!(
        echoed >= 50,
        "the callee heard its tone back in {echoed} frames"
    );
    w.finish().await;
}
