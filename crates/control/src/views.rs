//! The stored records as the API shows them (the model's views): no secrets (a key shows its
//! prefix only), RFC 3339 times,
//! the trunk's registration as the engine sees it.

use dialtone_engine::{Engine, RegistrationState};
use dialtone_model::agent::AgentView;
use dialtone_model::time::rfc3339;
use dialtone_model::{
    KeyView, NumberView, OrganizationView, ProviderView, RegistrationView, TrunkView,
};
use dialtone_storage::{Agent, ApiKey, Number, Organization, Provider, Trunk};
use uuid::Uuid;

/// A trunk as the API shows it, with where its registration stands.
pub(crate) fn trunk_view(engine: &Engine, trunk: &Trunk) -> TrunkView {
    TrunkView {
        id: trunk.id,
        org_id: trunk.org_id,
        name: trunk.name.clone(),
        host: trunk.host.clone(),
        port: trunk.port,
        transport: trunk.transport,
        username: trunk.username.clone(),
        has_password: trunk.password.is_some(),
        realm: trunk.realm.clone(),
        from_domain: trunk.from_domain.clone(),
        max_concurrent_calls: trunk.max_concurrent_calls,
        max_calls_per_second: trunk.max_calls_per_second,
        register: trunk.register,
        inbound_cidrs: trunk
            .inbound_cidrs
            .iter()
            .map(ToString::to_string)
            .collect(),
        tls_ca_pem: trunk.security.tls_ca_pem.clone(),
        tls_verify: trunk.security.tls_verify,
        tls_client_cert_pem: trunk.security.tls_client_cert_pem.clone(),
        has_tls_client_key: trunk.security.tls_client_key_pem.is_some(),
        srtp: trunk.security.srtp,
        codecs: trunk.offered_codecs().to_vec(),
        transfer_sip_domains: trunk.security.transfer_sip_domains.clone(),
        registration: engine.registration_state(trunk.id).map(|r| match r {
            RegistrationState::Pending => RegistrationView::Pending,
            RegistrationState::Registered { expires, refreshes } => {
                RegistrationView::Registered { expires, refreshes }
            }
            RegistrationState::Failed { status } => RegistrationView::Failed {
                sip_status: Some(status),
            },
        }),
        created_at: rfc3339(trunk.created_at),
        updated_at: rfc3339(trunk.updated_at),
    }
}

/// A number as the API shows it, with the agent that answers calls to it.
pub(crate) fn number_view(number: &Number, answering: Option<Uuid>) -> NumberView {
    NumberView {
        id: number.id,
        org_id: number.org_id,
        e164: number.e164.clone(),
        trunk_id: number.trunk_id,
        answering_agent_id: answering,
        created_at: rfc3339(number.created_at),
    }
}

/// An agent as the API shows it (`brain_headers` by name only).
pub(crate) fn agent_view(agent: &Agent) -> AgentView {
    AgentView {
        id: agent.id,
        name: agent.name.clone(),
        number_ids: agent.number_ids.clone(),
        primary_number_id: agent.primary_number_id,
        settings: agent.config.shown(),
        created_at: rfc3339(agent.created_at),
    }
}

/// A provider as the API shows it (never its API key).
pub(crate) fn provider_view(provider: &Provider) -> ProviderView {
    ProviderView {
        id: provider.id,
        name: provider.name.clone(),
        kind: provider.kind,
        base_url: provider.base_url.clone(),
        has_api_key: provider.api_key.is_some(),
        created_at: rfc3339(provider.created_at),
    }
}

/// An organisation as the API shows it.
pub(crate) fn organization_view(org: &Organization) -> OrganizationView {
    OrganizationView {
        id: org.id,
        name: org.name.clone(),
        max_concurrent_calls: org.max_concurrent_calls,
        max_calls_per_second: org.max_calls_per_second,
        disabled: org.disabled_at.is_some(),
        disabled_at: org.disabled_at.and_then(rfc3339),
        created_at: rfc3339(org.created_at),
    }
}

/// An API key as the API lists it (never its secret).
pub(crate) fn key_view(key: &ApiKey) -> KeyView {
    KeyView {
        id: key.id,
        organization_id: key.org_id,
        prefix: key.prefix.clone(),
        scope: key.scope,
        created_at: rfc3339(key.created_at),
        expires_at: key.expires_at.and_then(rfc3339),
        last_used_at: key.last_used_at.and_then(rfc3339),
    }
}
