//! The offline model: deterministic, marked, and within the requested token budget.

use jobhost::llm::{ChatMessage, ChatRequest, LlmSettings, Role, build_chat_model};

fn request(topic: &str) -> ChatRequest {
    ChatRequest {
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "You are Ada, an engineer, taking part in a debate.".to_string(),
            },
            ChatMessage {
                role: Role::User,
                content: format!("Debate topic: {topic}\n\nThis is round 1 of 2."),
            },
        ],
        model: None,
        temperature: Some(0.7),
        max_tokens: None,
    }
}

#[tokio::test]
async fn offline_reply_is_deterministic() {
    let model = build_chat_model(&LlmSettings::default()).expect("offline model");
    let first = model
        .chat(request("Should cities ban cars?"))
        .await
        .expect("reply");
    let second = model
        .chat(request("Should cities ban cars?"))
        .await
        .expect("reply");
    assert_eq!(first, second);
}

#[tokio::test]
async fn offline_reply_is_marked_and_quotes_topic() {
    let model = build_chat_model(&LlmSettings::default()).expect("offline model");
    let response = model
        .chat(request("Should cities ban cars?"))
        .await
        .expect("reply");
    assert_eq!(model.provider(), "offline");
    assert_eq!(response.provider, "offline");
    assert!(
        response.text.starts_with("[offline model] "),
        "{}",
        response.text
    );
    assert!(
        response.text.contains("\"Should cities ban cars\""),
        "{}",
        response.text
    );
}

#[tokio::test]
async fn offline_reply_depends_on_prompt() {
    let model = build_chat_model(&LlmSettings::default()).expect("offline model");
    let topics = ["cars", "trains", "bikes", "boats", "planes", "buses"];
    let mut texts = Vec::new();
    for topic in topics {
        let text = model.chat(request(topic)).await.expect("reply").text;
        texts.push(text.replace(&format!("\"{topic}\""), "TOPIC"));
    }
    texts.sort();
    texts.dedup();
    assert!(texts.len() > 1, "every prompt got the same sentences");
}

#[tokio::test]
async fn offline_usage_counts_words() {
    let model = build_chat_model(&LlmSettings::default()).expect("offline model");
    let chat = request("cars");
    let prompt_words: usize = chat
        .messages
        .iter()
        .map(|m| m.content.split_whitespace().count())
        .sum();
    let response = model.chat(chat).await.expect("reply");
    let completion_words = response.text.split_whitespace().count();
    assert_eq!(response.usage.prompt_tokens as usize, prompt_words);
    assert_eq!(response.usage.completion_tokens as usize, completion_words);
    assert_eq!(
        response.usage.total_tokens,
        response.usage.prompt_tokens + response.usage.completion_tokens
    );
}

#[tokio::test]
async fn offline_reply_respects_max_tokens() {
    let model = build_chat_model(&LlmSettings::default()).expect("offline model");
    let mut chat = request("cars");
    chat.max_tokens = Some(5);
    let response = model.chat(chat).await.expect("reply");
    assert_eq!(response.text.split_whitespace().count(), 5);
    assert!(response.text.starts_with("[offline model]"));
}

#[tokio::test]
async fn offline_model_name_follows_request_then_settings() {
    let settings = LlmSettings {
        model: Some("configured".to_string()),
        ..LlmSettings::default()
    };
    let model = build_chat_model(&settings).expect("offline model");
    let response = model.chat(request("cars")).await.expect("reply");
    assert_eq!(response.model, "configured");

    let mut chat = request("cars");
    chat.model = Some("requested".to_string());
    let response = model.chat(chat).await.expect("reply");
    assert_eq!(response.model, "requested");

    let default = build_chat_model(&LlmSettings::default()).expect("offline model");
    let response = default.chat(request("cars")).await.expect("reply");
    assert_eq!(response.model, "offline");
}
