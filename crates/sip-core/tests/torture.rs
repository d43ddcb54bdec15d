//! Malformed and tricky messages in the manner of RFC 4475, each with the answer it must get.
//! Every message passes through the same entry point the daemon uses
//! ([`dialtone_sip_core::validate::validate`]); none may panic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use dialtone_sip_core::validate::{DropReason, Inbound, RejectReason, validate};

/// What a message must get.
#[derive(Debug)]
enum Expect {
    /// Parsed and passed on.
    Accept,
    /// Refused with this status and this exact reason phrase.
    Refuse(u16, &'static str),
    /// Dropped (cannot be answered).
    Drop,
}

fn req(start: &str, headers: &str, body: &str) -> String {
    format!(
        "{start}\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

const VIA: &str = "Via: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK74bf9\r\n";
const REST: &str = "Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=9fxced76sl\r\nTo: <sip:bob@example.com>\r\nCall-ID: 3848276298220188511@example.com\r\nCSeq: 1 OPTIONS\r\n";

fn cases() -> Vec<(&'static str, String, Expect)> {
    let good = req(
        "OPTIONS sip:bob@example.com SIP/2.0",
        &format!("{VIA}{REST}"),
        "",
    );
    vec![
        ("plain valid OPTIONS", good.clone(), Expect::Accept),
        (
            "header line folding and tabs (4475 3.1.1.1 kind)",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                &format!("{VIA}{REST}Subject: first line\r\n  continued\r\n\tand more\r\nX-Tabbed :\t value \r\n"),
                "",
            ),
            Expect::Accept,
        ),
        (
            "compact header names",
            "OPTIONS sip:bob@example.com SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKc1\r\nMax-Forwards: 70\r\nf: <sip:alice@example.com>;tag=1\r\nt: sip:bob@example.com\r\ni: compact-1\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n".to_owned(),
            Expect::Accept,
        ),
        (
            "lower-case header names and extra whitespace around colons",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                "via  :  SIP/2.0/UDP 192.0.2.2;branch=z9hG4bKws\r\nmax-forwards:70\r\nfrom:<sip:a@example.com>;tag=1\r\nto:   <sip:bob@example.com>\r\ncall-id:ws-1\r\ncseq:  1 OPTIONS\r\n",
                "",
            ),
            Expect::Accept,
        ),
        (
            "leading CRLFs before the start line",
            format!("\r\n\r\n{good}"),
            Expect::Accept,
        ),
        (
            "a very long header value (8 KiB)",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                &format!("{VIA}{REST}X-Long: {}\r\n", "a".repeat(8192)),
                "",
            ),
            Expect::Accept,
        ),
        (
            "many Via headers",
            req(
                "OPTIONS sip:bob@example.com SIP/2.0",
                &format!(
                    "{VIA}{}{REST}",
                    (0..40)
                        .map(|i| format!("Via: SIP/2.0/UDP 10.0.0.{i};branch=z9hG4bKv{i}\r\n"))
                        .collect::<String>()
                ),
                "",
            ),
            Expect::Accept,
        ),
        (
            "body with a multipart content type",
            req(
                "INFO sip:bob@example.com SIP/2.0",
                &format!("{VIA}{}Content-Type: multipart/mixed;boundary=unique\r\n", REST.replace("1 OPTIONS", "1 INFO")),
                "--unique\r\nContent-Type: text/plain\r\n\r\nhello\r\n--unique--\r\n",
            ),
            Expect::Accept,
        ),
        (
            "missing Call-ID",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Call-ID: 3848276298220188511@example.com\r\n", "")), ""),
            Expect::Refuse(400, "Bad Request - Missing Call-ID header"),
        ),
        (
            "missing Max-Forwards",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Max-Forwards: 70\r\n", "")), ""),
            Expect::Refuse(400, "Bad Request - Missing Max-Forwards header"),
        ),
        (
            "CSeq method differs from the request method",
            req("INVITE sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(400, "Bad Request - CSeq method does not match request method"),
        ),
        (
            "CSeq number out of range (4475 3.1.2.9 kind)",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("CSeq: 1 OPTIONS", "CSeq: 36893488147419103232 OPTIONS")), ""),
            Expect::Refuse(400, "Bad Request - Malformed CSeq header"),
        ),
        (
            "negative Max-Forwards",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Max-Forwards: 70", "Max-Forwards: -1")), ""),
            Expect::Refuse(400, "Bad Request - Malformed Max-Forwards header"),
        ),
        (
            "two From headers",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}From: <sip:eve@example.com>;tag=2\r\n"), ""),
            Expect::Refuse(400, "Bad Request - Multiple From headers"),
        ),
        (
            "Content-Length larger than the datagram (4475 3.1.2.7 kind)",
            format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}{REST}Content-Length: 9999\r\n\r\nshort"),
            Expect::Refuse(400, "Bad Request - Content-Length exceeds body"),
        ),
        (
            "non-numeric Content-Length",
            format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}{REST}Content-Length: ten\r\n\r\n"),
            Expect::Refuse(400, "Bad Request - Invalid Content-Length"),
        ),
        (
            "two bodies' worth of Content-Length headers disagreeing",
            format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}{REST}Content-Length: 2\r\nl: 3\r\n\r\nabc"),
            Expect::Refuse(400, "Bad Request - Conflicting Content-Length"),
        ),
        (
            "header line without a colon",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}NoColonHere\r\n"), ""),
            Expect::Refuse(400, "Bad Request - Malformed header line"),
        ),
        (
            "unknown SIP version (4475 3.1.2.16 kind)",
            req("OPTIONS sip:bob@example.com SIP/7.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(505, "Version Not Supported"),
        ),
        (
            "unknown URI scheme (4475 3.3.5 kind)",
            req("OPTIONS nobodyknowsthisscheme:totallyopaquecontent SIP/2.0", &format!("{VIA}{REST}"), ""),
            Expect::Refuse(416, "Unsupported URI Scheme"),
        ),
        (
            "extension method (4475 3.3.2 kind)",
            req("NEWMETHOD sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("1 OPTIONS", "1 NEWMETHOD")), ""),
            Expect::Refuse(501, "Not Implemented"),
        ),
        (
            "lower-case method is a different (unknown) method",
            req("options sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("1 OPTIONS", "1 options")), ""),
            Expect::Refuse(501, "Not Implemented"),
        ),
        (
            "Require with an unknown option tag (4475 3.3.7 kind)",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{REST}Require: nothingSupportsThis, nothingSupportsThisEither\r\n"), ""),
            Expect::Refuse(420, "Bad Extension"),
        ),
        (
            "Max-Forwards exhausted on INFO",
            req("INFO sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("Max-Forwards: 70", "Max-Forwards: 0").replace("1 OPTIONS", "1 INFO")), ""),
            Expect::Refuse(483, "Too Many Hops"),
        ),
        (
            "malformed From name-addr",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("From: <sip:alice@example.com>;tag=9fxced76sl", "From: <sip:alice@example.com;tag=9fxced76sl")), ""),
            Expect::Refuse(400, "Bad Request - Malformed From header"),
        ),
        (
            "no Via: nowhere to answer",
            req("OPTIONS sip:bob@example.com SIP/2.0", REST, ""),
            Expect::Drop,
        ),
        (
            "unreadable Via",
            req("OPTIONS sip:bob@example.com SIP/2.0", &format!("Via: not a via\r\n{REST}"), ""),
            Expect::Drop,
        ),
        (
            "ACK that is malformed is never answered",
            req("ACK sip:bob@example.com SIP/2.0", &format!("{VIA}{}", REST.replace("1 OPTIONS", "1 INVITE")), ""),
            Expect::Drop,
        ),
        ("empty datagram", String::new(), Expect::Drop),
        ("only CRLFs (a keep-alive)", "\r\n\r\n".to_owned(), Expect::Drop),
        ("no blank line after headers", format!("OPTIONS sip:bob@example.com SIP/2.0\r\n{VIA}"), Expect::Drop),
        ("start line with one token", "GARBAGE\r\n\r\n".to_owned(), Expect::Drop),
        ("binary noise", String::from_utf8_lossy(&[0xff, 0xfe, 0x00, 0x13, 0x37]).into_owned(), Expect::Drop),
        (
            "response without a CSeq",
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nContent-Length: 0\r\n\r\n".to_owned(),
            Expect::Drop,
        ),
        (
            "response with an out-of-range status",
            "SIP/2.0 999 Weird\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n".to_owned(),
            Expect::Drop,
        ),
    ]
}

#[test]
fn every_tricky_message_gets_its_answer() {
    let mut failures = Vec::new();
    for (name, message, expect) in cases() {
        let got = validate(message.as_bytes(), "tag");
        let ok = match (&expect, &got) {
            (Expect::Accept, Inbound::Request(_) | Inbound::Response(_)) => true,
            (Expect::Refuse(code, reason), Inbound::Reject { response, .. }) => {
                let text = response.to_string();
                text.starts_with(&format!("SIP/2.0 {code} {reason}\r\n"))
            }
            (Expect::Drop, Inbound::Drop(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn folded_values_reach_rsip_unfolded() {
    let message = req(
        "OPTIONS sip:bob@example.com SIP/2.0",
        &format!("{VIA}{REST}Subject: first line\r\n  continued\r\n"),
        "",
    );
    let Inbound::Request(r) = validate(message.as_bytes(), "t") else {
        panic!("not accepted");
    };
    assert!(r.to_string().contains("Subject: first line continued\r\n"));
}

#[test]
fn refusals_say_which_rule_failed() {
    let message = req(
        "OPTIONS sip:bob@example.com SIP/2.0",
        &format!("{VIA}{REST}Require: foo\r\n"),
        "",
    );
    let Inbound::Reject { response, reason } = validate(message.as_bytes(), "t") else {
        panic!("not refused");
    };
    assert_eq!(reason, RejectReason::BadExtension);
    assert!(response.to_string().contains("Unsupported: foo\r\n"));
    assert!(matches!(
        validate(b"", "t"),
        Inbound::Drop(DropReason::Unreadable(_))
    ));
}
