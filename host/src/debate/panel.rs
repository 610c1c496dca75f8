//! The panel a debate gets when the request names no personas.

use super::Persona;

/// Three personas with different priorities, so that a debate on any topic has a case for, a
/// case against, and a search for middle ground.
pub fn default_panel() -> Vec<Persona> {
    let persona = |id: &str, name: &str, role: &str, style: &str, values: &[&str]| Persona {
        id: id.to_string(),
        display_name: name.to_string(),
        system_prompt: None,
        role: Some(role.to_string()),
        style: Some(style.to_string()),
        values: values.iter().map(|value| value.to_string()).collect(),
    };
    vec![
        persona(
            "advocate",
            "The Advocate",
            "argues for the proposal and its benefits",
            "energetic, uses concrete examples",
            &["progress", "opportunity"],
        ),
        persona(
            "skeptic",
            "The Skeptic",
            "probes risks, costs and weak evidence",
            "precise, asks for evidence",
            &["caution", "evidence"],
        ),
        persona(
            "pragmatist",
            "The Pragmatist",
            "looks for a workable middle ground",
            "plain, focused on what can be done next",
            &["feasibility", "fairness"],
        ),
    ]
}
