//! # One call's life: a sans-IO machine and the thin task that drives it
//!
//! [`CallMachine`](machine::CallMachine) holds every decision about an outbound call; it never
//! reads a clock nor touches a socket, so each path is unit-tested on a virtual clock
//! (`tests.rs`). The driver (`driver.rs`, [`Engine::run`](crate::Engine)) owns the call's
//! I/O and feeds the machine:
//!
//! ```text
//!  admission ─┐                                   ┌─▶ Dial ─────────────▶ Placed | NotPlaced
//!  UA events ─┤                                   ├─▶ StartEarlyMedia ──▶ Media(outcome)
//!  media ─────┤── handle(now, Input) ─▶ machine ──┼─▶ ConnectMedia ─────▶ Media(outcome)
//!  brain ─────┤   handle_timeout(now)     │       ├─▶ StartBrain, AnswerRemoteOffer, SendDtmf,
//!  API, daemon┘                           │       │   TellBrainDtmf, HangUp, TellBrainEnded,
//!                          poll_timeout() ┘       └─▶ StopMedia, Record(step), Measure(…)
//! ```
//!
//! The driver performs the actions in order, reporting how its I/O went as inputs
//! (`Placed`/`NotPlaced` after `Dial`, `Media(…)` after a media start); status steps go to
//! the call's [`ProgressLog`](progress::ProgressLog), which writes them in order and announces
//! each only once committed.
//!
//! A call placed to us runs through the same driver and machine (`answering.rs`: its media
//! made ready before the answer, then [`CallMachine::answering`](machine::CallMachine::answering)).
//!
//! Files: `input.rs` (what the machine is told), `action.rs` (what it asks), `machine.rs` (the
//! decisions), `driver.rs` (the task), `sdp.rs` (our offer and answers, and the trunk's SRTP
//! policy), `media.rs` (early media listener, media settings and statistics), `progress.rs`
//! (the ordered writes), `transfer.rs` (where a transfer may go, and one REFER attempt's
//! state), `bridge.rs` (a bridged transfer's second leg), `bridge_leg.rs` (the driver's I/O
//! for that leg: dial, media, the relay).

mod action;
pub(crate) mod answering;
#[cfg(test)]
mod answering_tests;
mod bridge;
mod bridge_leg;
#[cfg(test)]
mod bridge_tests;
mod driver;
mod input;
mod machine;
mod media;
mod progress;
mod sdp;
#[cfg(test)]
mod tests;
mod transfer;
#[cfg(test)]
mod transfer_tests;

pub(crate) use input::{Control, HangUp};
pub(crate) use transfer::{TransferPolicy, TransferRefusal};
