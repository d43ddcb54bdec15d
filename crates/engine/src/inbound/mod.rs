//! # Calls placed to our numbers
//!
//! [`Engine::answer_inbound`] takes the calls the SIP user agent reports (it already sent
//! `100 Trying`) and, for each:
//!
//! 1. routes it ([`guard`]): the number called, the live number of ours with it, its trunk's
//!    addresses (its host resolved through the user agent's DNS resolver, plus the trunk's
//!    `inbound_cidrs`) and the agent on it that answers calls. Refused — `404` (not ours, or
//!    nothing answers it), `403` (not from its trunk) — it leaves no record; refusals are
//!    budgeted per source by the SIP core, which stops answering a source that spent its
//!    budget;
//! 2. applies the organisation's concurrency cap: over it, `486 Busy Here` and no record (a
//!    call that never rang here is not a call of ours; the metric
//!    `dialtone_inbound_calls_total{outcome="busy"}` counts them);
//! 3. rings (`180`), makes the media ready (a port, our answer to the caller's offer —
//!    refused `488` without an offer we can take, `503` without a port), writes the call's
//!    row (`direction: inbound`, `from_number` the caller — P-Asserted-Identity, else From —
//!    and `to` our number), and runs it like a dispatched call (`call::answering`): recorded
//!    `ringing`, answered `200 OK`, the brain started at the caller's ACK, webhooks
//!    `call.ringing`, `call.answered`, `call.ended` to the agent's webhook URL.
//!
//! Nothing inbound is routed onward: a call is answered by the number's agent or refused.

mod guard;

use std::sync::{Arc, Weak};
use std::time::Instant;

use dialtone_model::{Direction, placeholder};
use dialtone_sip_ua::{Incoming, IncomingCall};
use dialtone_storage::{Agent, InboundRoute, NewCall, Number, Trunk};
use serde_json::Value;
use tracing::Instrument;
use uuid::Uuid;

use crate::caps::{self, Caps, Held};
use crate::{Engine, trunk_for_ua};

/// A call placed to us that may be answered: the number, its agent and its trunk.
struct Routed {
    number: Number,
    agent: Agent,
    trunk: Trunk,
}

/// Why a call placed to us is not answered: the SIP status, the metric's outcome, and whether
/// the refusal spends its source's budget.
#[derive(Debug, Clone, Copy)]
struct Refused {
    status: u16,
    outcome: &'static str,
    /// Only a source not trusted for the call is charged: a carrier's address, shared by every
    /// organisation it serves, is never cut off for one number's refusal.
    charged: bool,
}

impl Refused {
    fn new(status: u16, outcome: &'static str) -> Self {
        Self {
            status,
            outcome,
            charged: false,
        }
    }

    /// The guard's refusal: a stranger's INVITE or one for no number of ours spends the
    /// source's budget; one from the number's own trunk does not.
    fn by_guard(verdict: guard::Verdict, status: u16) -> Self {
        Self {
            charged: matches!(verdict, guard::Verdict::Forbidden | guard::Verdict::NotOurs),
            ..Self::new(status, verdict.outcome())
        }
    }

    /// Something of ours failed (storage): `500`.
    fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "a call placed to us cannot be routed");
        Self::new(500, "error")
    }
}

impl Engine {
    /// Starts answering calls placed to our numbers (the user agent must take inbound calls);
    /// `false` when they are answered already.
    pub fn answer_inbound(self: &Arc<Self>) -> bool {
        let Some(mut incoming) = self.ua.incoming_calls() else {
            return false;
        };
        // Weak: the engine may be dropped while the user agent still runs.
        let engine: Weak<Engine> = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(call) = incoming.recv().await {
                let Some(engine) = engine.upgrade() else {
                    break;
                };
                tokio::spawn(async move { engine.take_incoming(call).await });
            }
        });
        true
    }

    async fn take_incoming(self: Arc<Self>, incoming: Incoming) {
        let Incoming { call, offer } = incoming;
        let span = tracing::info_span!(
            "inbound",
            sip_call_id = %offer.sip_call_id,
            source = %offer.source,
        );
        async move {
            let refused = match self.route_incoming(&offer).await {
                Ok(routed) => match self.answer_routed(call, offer, routed).await {
                    Ok(()) => {
                        metrics::counter!("dialtone_inbound_calls_total", "outcome" => "answered")
                            .increment(1);
                        return;
                    }
                    Err((call, refused)) => {
                        let _ = call.refuse(refused.status, refused.charged);
                        refused
                    }
                },
                Err(refused) => {
                    let _ = call.refuse(refused.status, refused.charged);
                    refused
                }
            };
            tracing::debug!(
                status = refused.status,
                outcome = refused.outcome,
                "refused"
            );
            metrics::counter!("dialtone_inbound_calls_total", "outcome" => refused.outcome)
                .increment(1);
        }
        .instrument(span)
        .await;
    }

    /// The number, agent and trunk of a call placed to us, or why it is refused.
    async fn route_incoming(&self, offer: &IncomingCall) -> Result<Routed, Refused> {
        if !self.is_accepting() {
            return Err(Refused::new(480, "shutting_down"));
        }
        // A node without its lease takes no calls: a survivor may be closing its calls.
        if !self.holds_lease() {
            return Err(Refused::new(480, "lease_lost"));
        }
        let number = guard::called_number(offer.request_user.as_deref(), offer.to_user.as_deref());
        let route = match &number {
            Some(n) => self
                .storage
                .inbound_route(n)
                .await
                .map_err(Refused::internal)?,
            None => None,
        };
        let facts = match &route {
            Some(route) => {
                let trunk = self
                    .storage
                    .get_trunk(route.number.trunk_id)
                    .await
                    .map_err(Refused::internal)?;
                let trunk_addresses = match self.ua.resolve(&trunk_for_ua(&trunk)).await {
                    Ok(addresses) => addresses.iter().map(|a| a.ip()).collect(),
                    Err(error) => {
                        tracing::warn!(%error, "the number's trunk does not resolve");
                        Vec::new()
                    }
                };
                let facts = guard::Route {
                    trunk_addresses,
                    trunk_networks: trunk.inbound_cidrs.clone(),
                    answered: route.agent.is_some(),
                };
                Some((trunk, facts))
            }
            None => None,
        };
        let verdict = guard::judge(offer.source.ip(), facts.as_ref().map(|(_, f)| f));
        if let Some(status) = verdict.status() {
            return Err(Refused::by_guard(verdict, status));
        }
        // Answered: the number, its agent and its trunk are all there.
        match (route, facts) {
            (
                Some(InboundRoute {
                    number,
                    agent: Some(agent),
                }),
                Some((trunk, _)),
            ) => Ok(Routed {
                number,
                agent,
                trunk,
            }),
            _ => Err(Refused::new(404, "not_found")),
        }
    }

    /// Applies the organisation's cap, rings, makes the media ready, writes the call's row and
    /// starts it; gives the call back with the refusal when it cannot be answered.
    async fn answer_routed(
        self: &Arc<Self>,
        call: dialtone_sip_ua::Call,
        offer: IncomingCall,
        routed: Routed,
    ) -> Result<(), (dialtone_sip_ua::Call, Refused)> {
        let arrived = Instant::now();
        let Routed {
            number,
            agent,
            trunk,
        } = routed;
        let settings = &agent.config;
        let org = match self.storage.get_organization(agent.org_id).await {
            Ok(org) if org.disabled_at.is_none() => org,
            Ok(_) => return Err((call, Refused::new(403, "organization_disabled"))),
            Err(error) => return Err((call, Refused::internal(error))),
        };
        let brain = match self.brain_for(settings) {
            Ok(brain) => brain,
            Err(brain) => {
                tracing::warn!(brain, "the agent's brain is not available here");
                return Err((call, Refused::new(480, "brain_unavailable")));
            }
        };
        let context = Value::Object(serde_json::Map::new());
        let instructions = settings
            .instructions
            .as_ref()
            .map(|i| placeholder::fill(i, &context));
        let mut agent_setup = match self
            .agent_setup(org.id, &brain, settings, instructions.as_deref(), &context)
            .await
        {
            Ok(setup) => setup,
            Err(error) => {
                tracing::warn!(%error, "the agent's brain cannot be set up");
                return Err((call, Refused::new(480, "brain_unavailable")));
            }
        };
        let org_cap = org
            .max_concurrent_calls
            .or(self.config.default_org_max_concurrent_calls);
        let org_slot = match org_cap.map(|cap| self.org_slots(org.id, cap).try_acquire_owned()) {
            None => None,
            Some(Ok(slot)) => Some(slot),
            Some(Err(_)) => return Err((call, Refused::new(486, "busy"))),
        };
        // Its record does not exist yet: the holds are the call's under an id of their own.
        let org_only = Caps {
            org: org_cap.map(|cap| (org.id, cap)),
            trunk: None,
        };
        let shared = caps::hold_shared(
            self.shared_caps().cloned(),
            uuid::Uuid::now_v7(),
            org_only,
            Instant::now(),
        )
        .await;
        let held = match shared {
            Ok(shared) => Held::new(org_slot, shared),
            Err(_) => return Err((call, Refused::new(486, "busy"))),
        };
        if call.ring(Arc::new(trunk_for_ua(&trunk))).is_err() {
            return Err((call, Refused::new(500, "error")));
        }
        // The media starts before the call's row exists: its recording is staged under an id
        // of its own.
        let recording = self
            .recordings
            .as_ref()
            .and_then(|r| r.record_to(Uuid::now_v7(), settings));
        let prepared = match self.prepare_answer(
            org.id,
            (trunk.security.srtp, trunk.offered_codecs()),
            offer.sdp.as_deref(),
            recording.as_ref().map(|r| r.to.clone()),
        ) {
            Ok(prepared) => prepared,
            Err(unanswerable) => {
                return Err((call, Refused::new(unanswerable.status(), "unanswerable")));
            }
        };
        if let Some(setup) = agent_setup.as_mut() {
            // Its first words are synthesised while the call is answered, as while an
            // outbound call rings.
            crate::agent_setup::synthesise_first_message(
                setup,
                settings.voice.as_deref(),
                settings.language.as_deref(),
            );
        }
        let caller = [&offer.asserted_user, &offer.from_user]
            .into_iter()
            .flatten()
            .find_map(|user| guard::e164_of(user))
            .or_else(|| offer.from_user.clone())
            .unwrap_or_else(|| "anonymous".into());
        let inserted = self
            .storage
            .insert_call(NewCall {
                org_id: org.id,
                agent_id: agent.id,
                direction: Direction::Inbound,
                to: number.e164.clone(),
                from_number: caller,
                trunk_id: trunk.id,
                instructions,
                context,
                metadata: Value::Object(serde_json::Map::new()),
                webhook_url: settings.webhook_url.clone(),
            })
            .await;
        let stored = match inserted {
            Ok(stored) => stored,
            Err(error) => return Err((call, Refused::internal(error))),
        };
        tracing::info!(call_id = %stored.id, agent_id = %agent.id, "answering a call placed to us");
        let mut plan = self.plan(
            &stored,
            &org,
            &agent,
            &trunk,
            (brain, agent_setup, None),
            arrived,
        );
        // No answering machine calls us.
        plan.speech.amd = None;
        plan.record = recording;
        let sip_call_id = offer.sip_call_id;
        self.spawn_call(stored.id, move |engine, controls| async move {
            engine
                .run_answering(plan, call, sip_call_id, prepared, held, controls)
                .await;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a source not trusted for the call spends its budget: a number of ours that nothing
    /// answers, refused to its own trunk's address, never cuts that (shared) carrier off.
    #[test]
    fn only_untrusted_sources_are_charged_for_a_refusal() {
        use guard::Verdict;
        assert!(Refused::by_guard(Verdict::Forbidden, 403).charged);
        assert!(Refused::by_guard(Verdict::NotOurs, 404).charged);
        assert!(!Refused::by_guard(Verdict::NotAnswered, 404).charged);
        assert!(!Refused::new(403, "organization_disabled").charged);
    }
}
