//! The system message of a conversation: who the agent is (`persona`), what it is to do (the
//! effective instructions, placeholders filled), how to speak on a phone line, and the call's
//! `context` object, so the agent can use it mid-call.

use serde_json::Value;

/// The system prompt from the agent's persona and language, the call's effective
/// instructions (placeholders already filled) and its context.
pub fn system_prompt(
    persona: Option<&str>,
    instructions: Option<&str>,
    language: Option<&str>,
    context: &Value,
) -> String {
    let mut prompt = String::new();
    if let Some(persona) = persona.filter(|p| !p.trim().is_empty()) {
        prompt.push_str(persona.trim());
        prompt.push_str("\n\n");
    }
    if let Some(instructions) = instructions.filter(|i| !i.trim().is_empty()) {
        prompt.push_str("Your task on this call:\n");
        prompt.push_str(instructions.trim());
        prompt.push_str("\n\n");
    }
    prompt.push_str(
        "You are speaking on a phone call. Everything you write is spoken aloud: answer in \
         short, natural sentences, with no lists, markdown or emoji. When the conversation is \
         over, say goodbye and call end_call.",
    );
    if let Some(language) = language {
        prompt.push_str(&format!(" Speak in the language {language}."));
    }
    if context.as_object().is_some_and(|c| !c.is_empty()) {
        prompt.push_str("\n\nWhat is known about this call (JSON):\n");
        prompt.push_str(&context.to_string());
    }
    prompt
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persona_instructions_and_context_are_in_the_prompt() {
        let prompt = system_prompt(
            Some("You are Ava, from Acme."),
            Some("Qualify the lead."),
            Some("en-US"),
            &serde_json::json!({"name": "Sam"}),
        );
        assert!(
            prompt.starts_with(
                "You are Ava, from Acme.\n\nYour task on this call:\nQualify the lead."
            )
        );
        assert!(prompt.contains("en-US"));
        assert!(prompt.ends_with(r#"{"name":"Sam"}"#));
        assert!(!system_prompt(None, None, None, &serde_json::json!({})).contains("JSON"));
    }
}
