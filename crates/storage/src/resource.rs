//! What the API asks of every resource it checks ownership of: whose it is ([`OrgOwned`]) and
//! how to read it by id ([`Stored`]).

use uuid::Uuid;

use crate::{Agent, Call, Number, Provider, Result, Storage, Trunk};

/// A resource that belongs to one organisation.
pub trait OrgOwned {
    /// The organisation.
    fn org_id(&self) -> Uuid;
}

macro_rules! org_owned {
    ($($t:ty),*) => {
        $(impl OrgOwned for $t {
            fn org_id(&self) -> Uuid {
                self.org_id
            }
        })*
    };
}

org_owned!(Trunk, Number, Agent, Call, Provider);

/// A resource read by id (what the API's ownership checks fetch).
pub trait Stored: OrgOwned + Sized {
    /// Its name in messages (`trunk`, `number`, `agent`, `call`, `provider`).
    const ENTITY: &'static str;
    /// Reads it.
    fn fetch(storage: &Storage, id: Uuid)
    -> impl std::future::Future<Output = Result<Self>> + Send;
}

macro_rules! stored {
    ($($t:ty => $entity:literal, $get:ident);*) => {
        $(impl Stored for $t {
            const ENTITY: &'static str = $entity;
            fn fetch(storage: &Storage, id: Uuid) -> impl std::future::Future<Output = Result<Self>> + Send {
                storage.$get(id)
            }
        })*
    };
}

stored!(
    Trunk => "trunk", get_trunk;
    Number => "number", get_number;
    Agent => "agent", get_agent;
    Call => "call", get_call;
    Provider => "provider", get_provider
);
