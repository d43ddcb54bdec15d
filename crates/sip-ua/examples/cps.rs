//! Call setup rate: how many calls per second the user agent sets up and tears down against
//! SIPp on loopback, with SIPp's own UAC against the same SIPp UAS as the reference.
//!
//! `cargo run --release -p dialtone-sip-ua --example cps -- [calls] [concurrency]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use dialtone_sip_ua::{CallEvent, DialRequest, SipUa, Transport, Trunk, UaConfig, UaEvent};
use dialtone_test_support::{SipTransport, Sipp, SippOptions, scenario};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 20000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let calls: u32 = args.next().map_or(Ok(2000), |a| a.parse())?;
    let concurrency: u32 = args.next().map_or(Ok(50), |a| a.parse())?;
    let options = SippOptions {
        calls,
        ..SippOptions::default()
    };

    // Dialtone's UA → SIPp UAS.
    let uas = Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &options,
    )?;
    let ua = Arc::new(SipUa::start(UaConfig::new("127.0.0.1:0".parse()?)).await?);
    let mut trunk = Trunk::new("sipp", "127.0.0.1", Transport::Udp);
    trunk.port = Some(uas.port);
    let trunk = Arc::new(trunk);
    let slots = Arc::new(tokio::sync::Semaphore::new(concurrency as usize));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(calls as usize);
    for _ in 0..calls {
        let permit = slots.clone().acquire_owned().await?;
        let ua = ua.clone();
        let mut request = DialRequest::new(trunk.clone(), "+15559870000", "+15551230000");
        request.sdp_offer = Some(OFFER.as_bytes().to_vec());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let mut call = ua.dial(request).await.ok()?;
            let mut completed = false;
            while let Some(event) = call.next_event().await {
                match event {
                    UaEvent::Call(CallEvent::Answered { .. }) => call.hang_up().ok()?,
                    UaEvent::Call(CallEvent::Ended { .. }) => completed = true,
                    _ => {}
                }
            }
            completed.then_some(())
        }));
    }
    let mut ok = 0u32;
    for t in tasks {
        if matches!(t.await, Ok(Some(()))) {
            ok += 1;
        }
    }
    let ours = start.elapsed();
    uas.finish(Duration::from_secs(60))?;

    // Reference: SIPp UAC → SIPp UAS, same scenario, same count and concurrency.
    let reference_uas = Sipp::uas(
        &scenario("answer_then_we_hang_up.xml"),
        SipTransport::Udp,
        &options,
    )?;
    let start = Instant::now();
    let uac = Sipp::uac(
        &format!("127.0.0.1:{}", reference_uas.port),
        &SippOptions {
            calls,
            args: vec![
                "-r".into(),
                "100000".into(),
                "-l".into(),
                concurrency.to_string(),
                "-d".into(),
                "0".into(),
            ],
            ..SippOptions::default()
        },
    )?;
    uac.finish(Duration::from_secs(120))?;
    let reference = start.elapsed();
    reference_uas.finish(Duration::from_secs(60))?;

    let ours_cps = f64::from(ok) / ours.as_secs_f64();
    let reference_cps = f64::from(calls) / reference.as_secs_f64();
    println!(
        "{{\"calls\": {calls}, \"concurrency\": {concurrency}, \"completed\": {ok}, \
         \"dialtone_cps\": {ours_cps:.0}, \"sipp_uac_cps\": {reference_cps:.0}, \
         \"ratio\": {:.2}}}",
        ours_cps / reference_cps
    );
    Ok(())
}
