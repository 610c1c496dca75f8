//! The Markdown transcript stored as the run's artifact `transcript.md`.

use crate::payload::DebatePayload;
use crate::turns::{TokenUsage, Turn, TurnKind};
use std::fmt::Write;

/// Renders the debate as Markdown: the topic, the context as a quote, the participants, one
/// section per round with each turn under its speaker's name, then the synthesis and the token
/// total.
pub fn render_transcript(debate: &DebatePayload, turns: &[Turn]) -> String {
    let mut out = format!("# Debate: {}\n\n", one_line(&debate.topic));

    if let Some(context) = debate
        .context
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        for line in context.lines() {
            let _ = writeln!(out, "> {line}");
        }
        out.push('\n');
    }

    out.push_str("## Participants\n\n");
    for persona in &debate.personas {
        match persona
            .role
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            Some(role) => {
                let _ = writeln!(
                    out,
                    "- **{}**, {}",
                    one_line(&persona.display_name),
                    one_line(role)
                );
            }
            None => {
                let _ = writeln!(out, "- **{}**", one_line(&persona.display_name));
            }
        }
    }
    if debate.settings.include_moderator {
        out.push_str("- **Moderator**\n");
    }

    let mut round = 0;
    for turn in turns {
        if turn.kind == TurnKind::Synthesis {
            out.push_str("\n## Synthesis\n\n");
        } else {
            if turn.round != round {
                round = turn.round;
                let _ = write!(out, "\n## Round {round}\n");
            }
            let heading = match turn.kind {
                TurnKind::Summary => format!("{} (summary)", turn.speaker_name),
                _ => turn.speaker_name.clone(),
            };
            let _ = write!(out, "\n### {}\n\n", one_line(&heading));
        }
        let _ = writeln!(out, "{}", turn.text.trim());
    }

    let mut usage = TokenUsage::default();
    for turn in turns {
        usage.add(turn.usage);
    }
    let mut models: Vec<&str> = turns.iter().map(|t| t.model.as_str()).collect();
    models.sort_unstable();
    models.dedup();
    let _ = write!(
        out,
        "\n---\n\n{} turns; model: {}; tokens: {} prompt, {} completion, {} total.\n",
        turns.len(),
        if models.is_empty() {
            "none".to_string()
        } else {
            models.join(", ")
        },
        usage.prompt_tokens,
        usage.completion_tokens,
        usage.total_tokens
    );
    out
}

/// Keeps a heading or list item on one line whatever the input holds.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::parse_debate;
    use serde_json::json;

    fn turn(index: u32, round: u32, kind: TurnKind, name: &str, text: &str) -> Turn {
        Turn {
            turn: index,
            round,
            kind,
            speaker_id: name.to_lowercase(),
            speaker_name: name.to_string(),
            text: text.to_string(),
            model: "m1".to_string(),
            usage: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15,
            },
        }
    }

    fn render() -> String {
        let payload = json!({
            "debateId": "d",
            "topic": "Cars\nin cities",
            "context": "Line one\nLine two",
            "personas": [
                {"id": "ada", "displayName": "Ada", "role": "engineer"},
                {"id": "bo", "displayName": "Bo"}
            ],
            "settings": {"rounds": 1}
        });
        let debate = parse_debate(&payload.to_string()).expect("valid payload");
        let turns = vec![
            turn(0, 1, TurnKind::Argument, "Ada", "Ban them."),
            turn(1, 1, TurnKind::Argument, "Bo", "Keep them."),
            turn(2, 1, TurnKind::Summary, "Moderator", "They disagree."),
            turn(3, 2, TurnKind::Synthesis, "Moderator", "Compromise."),
        ];
        render_transcript(&debate, &turns)
    }

    #[test]
    fn transcript_has_title_and_context() {
        let text = render();
        assert!(text.starts_with("# Debate: Cars in cities\n"), "{text}");
        assert!(text.contains("> Line one\n> Line two\n"), "{text}");
    }

    #[test]
    fn transcript_lists_participants() {
        let text = render();
        assert!(text.contains("- **Ada**, engineer\n"), "{text}");
        assert!(text.contains("- **Bo**\n"), "{text}");
        assert!(text.contains("- **Moderator**\n"), "{text}");
    }

    #[test]
    fn transcript_has_turns_in_sections() {
        let text = render();
        let round = text.find("## Round 1").expect("round heading");
        let ada = text.find("### Ada\n\nBan them.").expect("Ada's turn");
        let summary = text
            .find("### Moderator (summary)\n\nThey disagree.")
            .expect("summary");
        let synthesis = text.find("## Synthesis\n\nCompromise.").expect("synthesis");
        assert!(round < ada);
        assert!(ada < summary);
        assert!(summary < synthesis);
        assert!(!text.contains("## Round 2"), "{text}");
    }

    #[test]
    fn transcript_ends_with_usage() {
        let text = render();
        assert!(
            text.ends_with("4 turns; model: m1; tokens: 40 prompt, 20 completion, 60 total.\n"),
            "{text}"
        );
    }
}
