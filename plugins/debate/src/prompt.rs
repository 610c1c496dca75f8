//! The chat requests behind each turn.
//!
//! Every request is a system message that sets the speaker's role and a user message with the
//! topic, the optional context, the relevant earlier turns, and the instruction with its word
//! limit.

use crate::payload::{DebatePayload, Persona};
use crate::turns::{PlannedTurn, Speaker, Turn, TurnKind};
use crate::words::trim_to_words;
use jobhost_plugin_sdk::llm::{ChatRequest, Message, Role};
use std::fmt::Write;

/// Number of the other personas' latest arguments included in a persona's prompt.
pub const RECENT_TURNS: usize = 4;
/// Word limit of each of those arguments in the prompt.
pub const RECENT_POINT_WORDS: usize = 80;

/// Returns the request for `planned`, given every turn finished before it.
pub fn request_for(
    debate: &DebatePayload,
    planned: &PlannedTurn,
    previous: &[Turn],
) -> ChatRequest {
    let (system, user) = match (planned.kind, planned.speaker) {
        (TurnKind::Argument, Speaker::Persona(index)) => {
            let persona = &debate.personas[index];
            (
                persona_system_prompt(persona),
                argument_prompt(debate, persona, planned.round, previous),
            )
        }
        (TurnKind::Summary, _) => (
            moderator_system_prompt(),
            summary_prompt(debate, planned.round, previous),
        ),
        (_, Speaker::Moderator) => (
            moderator_system_prompt(),
            synthesis_prompt(debate, previous),
        ),
        _ => (neutral_system_prompt(), synthesis_prompt(debate, previous)),
    };
    ChatRequest {
        messages: vec![
            Message {
                role: Role::System,
                content: system,
            },
            Message {
                role: Role::User,
                content: user,
            },
        ],
        model: debate.settings.model.clone(),
        temperature: Some(debate.settings.temperature),
        max_tokens: Some(max_tokens_for(debate.settings.max_words_per_turn)),
    }
}

/// Token budget of a reply of `max_words` words. English prose runs at about 1.3 tokens per word;
/// the margin lets a model finish its sentence, and the word limit is enforced by trimming.
pub fn max_tokens_for(max_words: u32) -> u32 {
    max_words.saturating_mul(2).saturating_add(100)
}

/// Returns the persona's own system prompt, or builds one from its name, role, style and values.
pub fn persona_system_prompt(persona: &Persona) -> String {
    if let Some(prompt) = persona
        .system_prompt
        .as_deref()
        .filter(|p| !p.trim().is_empty())
    {
        return prompt.trim().to_string();
    }
    let mut prompt = format!("You are {}", persona.display_name.trim());
    if let Some(role) = non_blank(&persona.role) {
        let _ = write!(prompt, ", {role}");
    }
    prompt.push_str(", taking part in a debate.");
    if let Some(style) = non_blank(&persona.style) {
        let _ = write!(prompt, " Your style is {style}.");
    }
    let values: Vec<&str> = persona
        .values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    if !values.is_empty() {
        let _ = write!(prompt, " You care most about: {}.", values.join(", "));
    }
    prompt.push_str(" Argue from your own point of view and stay in character.");
    prompt
}

fn moderator_system_prompt() -> String {
    "You are the neutral moderator of a debate. You take no side: you state each position \
     fairly, name where the debaters agree and where they differ, and point out open questions."
        .to_string()
}

fn neutral_system_prompt() -> String {
    "You are a neutral analyst who reads a debate and writes its conclusion. You take no side."
        .to_string()
}

fn argument_prompt(
    debate: &DebatePayload,
    persona: &Persona,
    round: u32,
    previous: &[Turn],
) -> String {
    let mut prompt = topic_section(debate);

    if let Some(summary) = previous.iter().rev().find(|t| t.kind == TurnKind::Summary) {
        let _ = write!(
            prompt,
            "\nThe moderator's summary of round {}:\n{}\n",
            summary.round, summary.text
        );
    }

    let recent = recent_points(previous, &persona.id);
    if !recent.is_empty() {
        prompt.push_str("\nRecent points from the other debaters:\n");
        for turn in recent {
            let _ = writeln!(
                prompt,
                "- {}: {}",
                turn.speaker_name,
                trim_to_words(&turn.text, RECENT_POINT_WORDS)
            );
        }
    }

    let _ = write!(
        prompt,
        "\nThis is round {round} of {}. Speak as {}: answer the points above where it helps and \
         add something new. Use at most {} words. Write plain prose without a heading and \
         without your name in front.",
        debate.settings.rounds,
        persona.display_name.trim(),
        debate.settings.max_words_per_turn
    );
    prompt
}

fn summary_prompt(debate: &DebatePayload, round: u32, previous: &[Turn]) -> String {
    let mut prompt = topic_section(debate);
    let _ = writeln!(prompt, "\nThe arguments of round {round}:");
    for turn in previous
        .iter()
        .filter(|t| t.kind == TurnKind::Argument && t.round == round)
    {
        let _ = writeln!(prompt, "- {}: {}", turn.speaker_name, turn.text);
    }
    let _ = write!(
        prompt,
        "\nSummarise round {round} in at most {} words: the main point of each debater, where \
         they agree, where they differ, and what is still open. Write plain prose without a \
         heading.",
        debate.settings.max_words_per_turn
    );
    prompt
}

/// Builds the synthesis prompt from every round summary and the last round's arguments in full,
/// which keeps it bounded however many rounds ran.
fn synthesis_prompt(debate: &DebatePayload, previous: &[Turn]) -> String {
    let mut prompt = topic_section(debate);
    let summaries: Vec<&Turn> = previous
        .iter()
        .filter(|t| t.kind == TurnKind::Summary)
        .collect();
    if !summaries.is_empty() {
        prompt.push_str("\nThe moderator's round summaries:\n");
        for turn in summaries {
            let _ = writeln!(prompt, "- Round {}: {}", turn.round, turn.text);
        }
    }
    let last_round = debate.settings.rounds;
    let _ = writeln!(prompt, "\nThe arguments of the last round ({last_round}):");
    for turn in previous
        .iter()
        .filter(|t| t.kind == TurnKind::Argument && t.round == last_round)
    {
        let _ = writeln!(prompt, "- {}: {}", turn.speaker_name, turn.text);
    }
    let _ = write!(
        prompt,
        "\nWrite the closing synthesis of the debate in at most {} words: where the debaters \
         agree, where they still differ, and a balanced conclusion. Write plain prose without a \
         heading.",
        debate.settings.max_words_per_turn
    );
    prompt
}

fn topic_section(debate: &DebatePayload) -> String {
    let mut section = format!("Debate topic: {}\n", debate.topic.trim());
    if let Some(context) = non_blank(&debate.context) {
        let _ = write!(section, "\nContext:\n{context}\n");
    }
    section
}

/// Returns the latest [`RECENT_TURNS`] arguments by speakers other than `speaker_id`, oldest first.
fn recent_points<'a>(previous: &'a [Turn], speaker_id: &str) -> Vec<&'a Turn> {
    let mut recent: Vec<&Turn> = previous
        .iter()
        .rev()
        .filter(|t| t.kind == TurnKind::Argument && t.speaker_id != speaker_id)
        .take(RECENT_TURNS)
        .collect();
    recent.reverse();
    recent
}

/// Cleans a model reply: drops surrounding whitespace and a leading `Name:` (plain or bold) that
/// repeats the speaker's name, then cuts it to `max_words` words.
pub fn clean_reply(text: &str, speaker_name: &str, max_words: u32) -> String {
    let mut text = text.trim();
    for prefix in [
        format!("**{speaker_name}:**"),
        format!("**{speaker_name}**:"),
        format!("{speaker_name}:"),
    ] {
        let head = text.get(..prefix.len());
        if head.is_some_and(|head| head.eq_ignore_ascii_case(&prefix)) {
            text = text[prefix.len()..].trim_start();
            break;
        }
    }
    trim_to_words(text, usize::try_from(max_words).unwrap_or(usize::MAX))
}

fn non_blank(text: &Option<String>) -> Option<&str> {
    text.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::parse_debate;
    use crate::turns::{TokenUsage, plan};
    use crate::words::count_words;
    use serde_json::json;

    fn debate() -> DebatePayload {
        let payload = json!({
            "debateId": "d",
            "topic": "Should cities ban cars?",
            "context": "A city of 500,000 people.",
            "personas": [
                {"id": "ada", "displayName": "Ada", "role": "an engineer", "style": "dry",
                 "values": ["evidence", "safety"]},
                {"id": "bo", "displayName": "Bo", "systemPrompt": "You are Bo, a shop owner."},
                {"id": "cy", "displayName": "Cy"}
            ],
            "settings": {"rounds": 2, "maxWordsPerTurn": 60, "temperature": 0.3, "model": "m1"}
        });
        parse_debate(&payload.to_string()).expect("valid payload")
    }

    fn turn(index: u32, round: u32, kind: TurnKind, id: &str, name: &str, text: &str) -> Turn {
        Turn {
            turn: index,
            round,
            kind,
            speaker_id: id.to_string(),
            speaker_name: name.to_string(),
            text: text.to_string(),
            model: "m1".to_string(),
            usage: TokenUsage::default(),
        }
    }

    fn user_message(request: &ChatRequest) -> &str {
        &request.messages[1].content
    }

    #[test]
    fn built_system_prompt_has_role_style_values() {
        let prompt = persona_system_prompt(&debate().personas[0]);
        assert!(prompt.starts_with("You are Ada, an engineer"), "{prompt}");
        assert!(prompt.contains("Your style is dry."), "{prompt}");
        assert!(prompt.contains("evidence, safety"), "{prompt}");
    }

    #[test]
    fn given_system_prompt_is_used_as_is() {
        assert_eq!(
            persona_system_prompt(&debate().personas[1]),
            "You are Bo, a shop owner."
        );
    }

    #[test]
    fn first_argument_has_topic_context_and_limit() {
        let debate = debate();
        let planned = plan(&debate)[0];
        let request = request_for(&debate, &planned, &[]);
        assert_eq!(request.messages[0].role, Role::System);
        assert_eq!(request.model.as_deref(), Some("m1"));
        assert_eq!(request.temperature, Some(0.3));
        assert_eq!(request.max_tokens, Some(max_tokens_for(60)));
        let user = user_message(&request);
        assert!(user.contains("Should cities ban cars?"), "{user}");
        assert!(user.contains("A city of 500,000 people."), "{user}");
        assert!(user.contains("at most 60 words"), "{user}");
        assert!(user.contains("round 1 of 2"), "{user}");
        assert!(!user.contains("Recent points"), "{user}");
    }

    #[test]
    fn argument_sees_others_and_last_summary() {
        let debate = debate();
        let previous = vec![
            turn(0, 1, TurnKind::Argument, "ada", "Ada", "ADA-ROUND-ONE"),
            turn(1, 1, TurnKind::Argument, "bo", "Bo", "BO-ROUND-ONE"),
            turn(2, 1, TurnKind::Argument, "cy", "Cy", "CY-ROUND-ONE"),
            turn(
                3,
                1,
                TurnKind::Summary,
                "moderator",
                "Moderator",
                "SUMMARY-ONE",
            ),
        ];
        let planned = plan(&debate)[4];
        let user = request_for(&debate, &planned, &previous).messages[1]
            .content
            .clone();
        assert!(user.contains("SUMMARY-ONE"), "{user}");
        assert!(user.contains("Bo: BO-ROUND-ONE"), "{user}");
        assert!(user.contains("Cy: CY-ROUND-ONE"), "{user}");
        assert!(!user.contains("ADA-ROUND-ONE"), "{user}");
    }

    #[test]
    fn recent_points_keep_latest_few_trimmed() {
        let long = "word ".repeat(300);
        let previous: Vec<Turn> = (0..6)
            .map(|i| {
                turn(
                    i,
                    1,
                    TurnKind::Argument,
                    "bo",
                    "Bo",
                    &format!("P{i} {long}"),
                )
            })
            .collect();
        let debate = debate();
        let planned = plan(&debate)[0];
        let user = request_for(&debate, &planned, &previous).messages[1]
            .content
            .clone();
        assert!(!user.contains("P1 "), "{user}");
        assert!(user.contains("P2 "), "{user}");
        assert!(user.contains("P5 "), "{user}");
        let point = user
            .lines()
            .find(|l| l.starts_with("- Bo: P5"))
            .expect("latest point");
        assert_eq!(count_words(point), RECENT_POINT_WORDS + 2);
    }

    #[test]
    fn summary_lists_round_arguments() {
        let debate = debate();
        let previous = vec![
            turn(0, 1, TurnKind::Argument, "ada", "Ada", "A1"),
            turn(1, 1, TurnKind::Argument, "bo", "Bo", "B1"),
            turn(2, 1, TurnKind::Argument, "cy", "Cy", "C1"),
        ];
        let planned = plan(&debate)[3];
        assert_eq!(planned.kind, TurnKind::Summary);
        let request = request_for(&debate, &planned, &previous);
        assert!(request.messages[0].content.contains("neutral moderator"));
        let user = user_message(&request);
        assert!(user.contains("- Ada: A1"), "{user}");
        assert!(user.contains("- Cy: C1"), "{user}");
        assert!(user.contains("Summarise round 1"), "{user}");
    }

    #[test]
    fn synthesis_without_moderator_is_neutral() {
        let mut debate = debate();
        debate.settings.include_moderator = false;
        debate.settings.rounds = 1;
        let previous = vec![
            turn(0, 1, TurnKind::Argument, "ada", "Ada", "A1"),
            turn(1, 1, TurnKind::Argument, "bo", "Bo", "B1"),
            turn(2, 1, TurnKind::Argument, "cy", "Cy", "C1"),
        ];
        let planned = *plan(&debate).last().expect("synthesis");
        let request = request_for(&debate, &planned, &previous);
        assert!(request.messages[0].content.contains("neutral analyst"));
        let user = user_message(&request);
        assert!(user.contains("- Bo: B1"), "{user}");
        assert!(user.contains("closing synthesis"), "{user}");
        assert!(!user.contains("round summaries"), "{user}");
    }

    #[test]
    fn clean_reply_drops_name_prefix_and_trims() {
        assert_eq!(
            clean_reply("  **Ada:** cars are loud ", "Ada", 150),
            "cars are loud"
        );
        assert_eq!(clean_reply("ada: cars", "Ada", 150), "cars");
        assert_eq!(clean_reply("one two three", "Ada", 2), "one two…");
        assert_eq!(clean_reply("Adam: hi", "Ada", 150), "Adam: hi");
    }
}
