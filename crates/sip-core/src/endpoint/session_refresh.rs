//! RFC 4028 session timers on answered calls: sending refreshes, answering the peer's, and
//! ending a call whose session expired.

use std::time::Instant;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method};

use super::call::Phase;
use super::timers::TimerKey;
use super::transactions::{Owner, Purpose};
use super::{CallEvent, CallHandle, Endpoint, Party};
use crate::end_reason::EndReason;
use crate::message;
use crate::session_timer::{self, SessionTimer};

impl Endpoint {
    /// The session timer is due: refresh it, or end the call the peer stopped refreshing.
    pub(super) fn session_timer(&mut self, now: Instant, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(timer) = call.session_timer.filter(|t| t.deadline <= now) else {
            return;
        };
        if call.phase != Phase::Confirmed {
            return;
        }
        self.touched.push(TimerKey::Call(handle));
        if !timer.we_refresh {
            tracing::info!(call = %handle, "session timer expired without a refresh");
            call.session_timer = None;
            call.bye_reason = EndReason::SessionExpired;
            call.phase = Phase::Ending;
            self.send_in_dialog(now, handle, None, Method::Bye, Purpose::Bye, None);
            return;
        }
        // Until the refresh is answered, do not refresh again before another half interval.
        call.session_timer = Some(SessionTimer::start(
            now,
            timer.interval.as_secs() as u32,
            true,
        ));
        let (method, body) = if call.remote_allows_update {
            (Method::Update, None)
        } else {
            (Method::Invite, call.sdp_offer.clone())
        };
        let cseq = call.next_cseq;
        call.next_cseq += 1;
        let expires = timer.header_value(true);
        let branch = self.ids.branch();
        let body = body.map(|b| ("application/sdp", b));
        let Some((mut req, destination, transport)) =
            self.in_dialog_request(handle, None, method, cseq, &branch, body)
        else {
            return;
        };
        req.headers
            .push(Header::Other("Session-Expires".into(), expires));
        req.headers
            .push(Header::Supported(rsip::headers::Supported::new("timer")));
        self.start_client_tx(
            now,
            Owner::Call(handle),
            Purpose::Refresh,
            branch,
            req,
            (destination, transport),
        );
    }

    /// The answer to our session refresh restarts the timer, or ends a dialog the peer lost.
    pub(super) fn on_refresh_result(
        &mut self,
        now: Instant,
        handle: CallHandle,
        resp: &rsip::Response,
    ) {
        let code = resp.status_code.code();
        if matches!(code, 408 | 481) {
            return self.end_session_expired(handle);
        }
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        let Some(timer) = call.session_timer else {
            return;
        };
        let (seconds, we_refresh) = match message::first(&resp.headers, "Session-Expires")
            .and_then(|v| session_timer::parse_session_expires(&v))
        {
            Some((s, refresher)) if (200..300).contains(&code) => {
                (s, refresher != Some(session_timer::Refresher::Uas))
            }
            _ => (timer.interval.as_secs() as u32, true),
        };
        call.session_timer = Some(SessionTimer::start(now, seconds, we_refresh));
        self.touched.push(TimerKey::Call(handle));
    }

    /// Our refresh found the dialog gone (408/481/timeout): the call is over (§10).
    pub(super) fn end_session_expired(&mut self, handle: CallHandle) {
        let Some(call) = self.calls.get_mut(&handle) else {
            return;
        };
        if matches!(call.phase, Phase::Confirmed | Phase::Ending) {
            call.phase = Phase::Terminated;
            self.emit(
                handle,
                CallEvent::Ended {
                    by: Party::Local,
                    reason: EndReason::SessionExpired,
                },
            );
        }
    }

    /// `Session-Expires`/`Require: timer` for our 2xx to the peer's refresh, when a timer runs.
    pub(super) fn session_headers(&self, handle: CallHandle) -> Vec<Header> {
        self.calls
            .get(&handle)
            .and_then(|c| c.session_timer)
            .map(|t| {
                vec![
                    Header::Other("Session-Expires".into(), t.header_value(false)),
                    Header::Require(rsip::headers::Require::new("timer")),
                ]
            })
            .unwrap_or_default()
    }
}
