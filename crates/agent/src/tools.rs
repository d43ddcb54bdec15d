//! The functions offered to the model: the agent's own `tools` (those with a `url` are run by
//! the engine as a signed POST) and the built-ins `end_call`, `send_dtmf` and, when the agent
//! has transfer destinations, `transfer_call`.

use dialtone_model::{Tool, TransferDestination};
use serde_json::json;

use crate::chat::ToolSpec;

/// The built-in that hangs up after what is queued has been said.
pub const END_CALL: &str = "end_call";
/// The built-in that sends digits (RFC 4733).
pub const SEND_DTMF: &str = "send_dtmf";
/// The built-in that hands the caller to one of the agent's destinations.
pub const TRANSFER_CALL: &str = "transfer_call";

/// How a tool the model called is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolKind {
    /// POSTed to this URL.
    Http(String),
    /// `end_call`.
    EndCall,
    /// `send_dtmf`.
    SendDtmf,
    /// `transfer_call`.
    TransferCall,
}

/// The functions offered and how each runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Toolbox {
    specs: Vec<ToolSpec>,
    kinds: Vec<(String, ToolKind)>,
}

impl Toolbox {
    /// The agent's tools with a `url` and the built-ins. A tool of the agent's without a URL
    /// is left out: nothing here could run it. An agent tool named like a built-in replaces it.
    pub fn new(tools: &[Tool], destinations: &[TransferDestination]) -> Self {
        let mut toolbox = Self::default();
        for tool in tools {
            if let Some(url) = &tool.url {
                toolbox.add(
                    ToolSpec {
                        name: tool.name.clone(),
                        description: tool.description.clone(),
                        parameters: if tool.parameters.is_object() {
                            tool.parameters.clone()
                        } else {
                            json!({"type": "object", "properties": {}})
                        },
                    },
                    ToolKind::Http(url.clone()),
                );
            }
        }
        toolbox.add(
            ToolSpec {
                name: END_CALL.into(),
                description: "End the call once you have said goodbye. Say the goodbye in the \
                              same message; the call ends after it has been heard."
                    .into(),
                parameters: json!({"type": "object", "properties": {}}),
            },
            ToolKind::EndCall,
        );
        toolbox.add(
            ToolSpec {
                name: SEND_DTMF.into(),
                description: "Press keys on the phone keypad (to navigate a phone menu).".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {"digits": {"type": "string", "description": "Keys to press: 0-9, *, #"}},
                    "required": ["digits"]
                }),
            },
            ToolKind::SendDtmf,
        );
        if !destinations.is_empty() {
            let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
            let described: Vec<String> = destinations
                .iter()
                .map(|d| format!("{}: {}", d.name, d.description))
                .collect();
            toolbox.add(
                ToolSpec {
                    name: TRANSFER_CALL.into(),
                    description: format!(
                        "Transfer the caller to a person or team. Destinations: {}",
                        described.join("; ")
                    ),
                    parameters: json!({
                        "type": "object",
                        "properties": {"destination": {"type": "string", "enum": names}},
                        "required": ["destination"]
                    }),
                },
                ToolKind::TransferCall,
            );
        }
        toolbox
    }

    fn add(&mut self, spec: ToolSpec, kind: ToolKind) {
        if self.kinds.iter().any(|(name, _)| *name == spec.name) {
            return;
        }
        self.kinds.push((spec.name.clone(), kind));
        self.specs.push(spec);
    }

    /// What the model is offered.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    /// How the tool `name` runs, if it is one.
    pub fn kind(&self, name: &str) -> Option<&ToolKind> {
        self.kinds.iter().find(|(n, _)| n == name).map(|(_, k)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(name: &str, url: Option<&str>) -> Tool {
        Tool {
            name: name.into(),
            description: "d".into(),
            parameters: json!({"type": "object"}),
            url: url.map(str::to_owned),
        }
    }

    #[test]
    fn http_tools_and_built_ins_are_offered_transfer_only_with_destinations() {
        let toolbox = Toolbox::new(
            &[
                tool("lookup", Some("https://x.example/t")),
                tool("local", None),
            ],
            &[],
        );
        let names: Vec<&str> = toolbox.specs().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["lookup", END_CALL, SEND_DTMF]);
        assert_eq!(
            toolbox.kind("lookup"),
            Some(&ToolKind::Http("https://x.example/t".into()))
        );
        let with = Toolbox::new(
            &[],
            &[TransferDestination {
                name: "sales".into(),
                to: "+14155550100".into(),
                description: "buying".into(),
                mode: None,
            }],
        );
        assert_eq!(with.kind(TRANSFER_CALL), Some(&ToolKind::TransferCall));
        assert_eq!(
            with.specs()
                .last()
                .map(|s| s.parameters["properties"]["destination"]["enum"].clone()),
            Some(json!(["sales"]))
        );
    }
}
