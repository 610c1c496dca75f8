//! The `workflow` plugin: handles `RUN_WORKFLOW`.
//!
//! It validates the payload `{"name": string, "steps": [{"id": string, "action": string, ...}]}`
//! and rejects a bad one with an `invalid-payload` error that names the field.
//!
//! NOTE: running the steps is not implemented yet. A valid payload fails with the fatal error
//! `not_implemented`, so a workflow job fails at once instead of being retried. This stays until a
//! set of step actions is defined.

use jobhost_plugin_sdk::{Guest, Job, JobError, PluginInfo, export_plugin, invalid_field};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashSet;

const JOB_TYPE: &str = "RUN_WORKFLOW";

struct Workflow;

impl Guest for Workflow {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "workflow".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            job_types: vec![JOB_TYPE.to_string()],
            description: "Validates multi-step workflows; running them is not implemented yet"
                .to_string(),
        }
    }

    fn run(job: Job) -> Result<String, JobError> {
        let workflow = parse_workflow(&job.payload)?;
        Err(JobError::fatal(
            "not_implemented",
            format!(
                "workflow {:?} with {} steps is valid, but running workflows is not implemented \
                 yet",
                workflow.name,
                workflow.steps.len()
            ),
        ))
    }
}

export_plugin!(Workflow);

/// A `RUN_WORKFLOW` payload.
#[derive(Debug, Deserialize)]
pub struct WorkflowPayload {
    pub name: String,
    pub steps: Vec<Step>,
}

/// One step; fields other than `id` and `action` are the action's parameters.
#[derive(Debug, Deserialize)]
pub struct Step {
    pub id: String,
    pub action: String,
    #[serde(flatten)]
    pub parameters: Map<String, Value>,
}

/// Parses and checks a `RUN_WORKFLOW` payload: a non-blank name, at least one step, and steps
/// with non-blank actions and non-blank, unique ids.
pub fn parse_workflow(payload: &str) -> Result<WorkflowPayload, JobError> {
    let workflow: WorkflowPayload = jobhost_plugin_sdk::parse_payload(payload)?;
    if workflow.name.trim().is_empty() {
        return Err(invalid_field("name", "is blank; give the workflow a name"));
    }
    if workflow.steps.is_empty() {
        return Err(invalid_field(
            "steps",
            "is empty; a workflow needs at least one step",
        ));
    }
    let mut seen = HashSet::new();
    for (index, step) in workflow.steps.iter().enumerate() {
        if step.id.trim().is_empty() {
            return Err(invalid_field(&format!("steps[{index}].id"), "is blank"));
        }
        if step.action.trim().is_empty() {
            return Err(invalid_field(&format!("steps[{index}].action"), "is blank"));
        }
        if !seen.insert(step.id.as_str()) {
            return Err(invalid_field(
                &format!("steps[{index}].id"),
                format!(
                    "{:?} is used by an earlier step; step ids must be unique",
                    step.id
                ),
            ));
        }
    }
    Ok(workflow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jobhost_plugin_sdk::ErrorKind;

    fn error_of(payload: &str) -> JobError {
        parse_workflow(payload).expect_err("invalid payload")
    }

    #[test]
    fn valid_workflow_keeps_step_parameters() {
        let workflow = parse_workflow(
            r#"{"name": "w", "steps": [{"id": "a", "action": "fetch", "url": "x"}]}"#,
        )
        .expect("valid payload");
        assert_eq!(workflow.steps[0].action, "fetch");
        assert_eq!(workflow.steps[0].parameters["url"], "x");
    }

    #[test]
    fn missing_action_names_step() {
        let error = error_of(r#"{"name": "w", "steps": [{"id": "a"}]}"#);
        assert_eq!(error.kind, ErrorKind::InvalidPayload);
        assert!(error.message.contains("`steps[0]`"), "{}", error.message);
        assert!(error.message.contains("`action`"), "{}", error.message);
    }

    #[test]
    fn blank_name_is_rejected() {
        let error = error_of(r#"{"name": " ", "steps": [{"id": "a", "action": "b"}]}"#);
        assert!(error.message.contains("`name`"), "{}", error.message);
    }

    #[test]
    fn empty_steps_are_rejected() {
        let error = error_of(r#"{"name": "w", "steps": []}"#);
        assert!(error.message.contains("`steps`"), "{}", error.message);
    }

    #[test]
    fn duplicate_step_id_is_rejected() {
        let error = error_of(
            r#"{"name": "w", "steps": [{"id": "a", "action": "b"}, {"id": "a", "action": "c"}]}"#,
        );
        assert!(error.message.contains("`steps[1].id`"), "{}", error.message);
    }

    #[test]
    fn wrong_type_names_field() {
        let error = error_of(r#"{"name": "w", "steps": [{"id": 1, "action": "b"}]}"#);
        assert!(error.message.contains("`steps[0].id`"), "{}", error.message);
    }
}
