//! `GET /openapi.json`: the OpenAPI 3.1 description of every route, written by hand. A test
//! checks that each router path appears here and each operation here reaches a handler.

use crate::debate;
use crate::job::{MAX_ATTEMPTS_LIMIT, PRIORITY_MAX, PRIORITY_MIN};
use axum::Json;
use serde_json::{Value, json};

pub async fn document() -> Json<Value> {
    Json(openapi_document())
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    })
}

fn json_response(description: &str, schema: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
    })
}

fn json_body(schema: &str) -> Value {
    json!({
        "required": true,
        "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
    })
}

fn id_parameter(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "required": true,
        "description": description,
        "schema": { "$ref": "#/components/schemas/Id" },
    })
}

fn page_parameters() -> Vec<Value> {
    vec![
        json!({ "name": "limit", "in": "query", "description": "Page size.",
                "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } }),
        json!({ "name": "cursor", "in": "query", "description": "`nextCursor` of the previous page.",
                "schema": { "type": "string" } }),
    ]
}

fn filter_parameters() -> Vec<Value> {
    let mut parameters = vec![
        json!({ "name": "status", "in": "query", "schema": { "$ref": "#/components/schemas/JobStatus" } }),
        json!({ "name": "type", "in": "query", "description": "Job type.", "schema": { "type": "string" } }),
    ];
    parameters.extend(page_parameters());
    parameters
}

/// Responses every mutating JSON route can return besides its success.
fn body_errors() -> Vec<(&'static str, Value)> {
    vec![
        ("400", error_response("Malformed JSON or an invalid id.")),
        (
            "401",
            error_response("API_TOKEN is set and the bearer token is missing or wrong."),
        ),
        ("413", error_response("The body exceeds MAX_BODY_BYTES.")),
        ("415", error_response("The body is not application/json.")),
        (
            "422",
            error_response("A field has the wrong type or value; `error.field` names it."),
        ),
    ]
}

fn with_responses(mut operation: Value, responses: Vec<(&str, Value)>) -> Value {
    if let Some(map) = operation["responses"].as_object_mut() {
        for (status, response) in responses {
            map.insert(status.to_string(), response);
        }
    }
    operation
}

fn paths() -> Value {
    let debate_id = id_parameter("debateId", "Debate id.");
    let job_id = id_parameter("jobId", "Job id.");
    let run_id = id_parameter("runId", "Run id.");
    let bearer = json!([{ "bearer": [] }]);

    let create_debate = with_responses(
        json!({
            "summary": "Submit a debate",
            "description": "Validates and stores the debate, enqueues one RUN_DEBATE job with idempotency key `RUN_DEBATE:<debateId>`, and returns at once. A debate id whose job is pending, running or completed returns that job with 200 and leaves the stored debate unchanged; after a failed or cancelled job a new job starts.",
            "security": bearer,
            "requestBody": json_body("DebateRequest"),
            "responses": {
                "202": json_response("The debate's job was enqueued.", "DebateAccepted"),
                "200": json_response("The debate id already has a pending, running or completed job.", "DebateAccepted"),
            },
        }),
        body_errors(),
    );
    let create_job = with_responses(
        json!({
            "summary": "Enqueue a job",
            "description": "Any valid job type is accepted; a type no loaded plugin handles stays pending (see /api/plugins).",
            "security": bearer,
            "requestBody": json_body("EnqueueRequest"),
            "responses": {
                "202": json_response("The job was enqueued.", "JobAccepted"),
                "200": json_response("The idempotency key matched a pending, running or completed job.", "JobAccepted"),
            },
        }),
        body_errors(),
    );

    json!({
        "/api/debates": {
            "post": create_debate.clone(),
            "get": {
                "summary": "List debates",
                "description": "Descending debate id order; generated ids are UUID v7, so newest first.",
                "parameters": page_parameters(),
                "responses": {
                    "200": json_response("One page of debates.", "DebatePage"),
                    "400": error_response("Invalid query parameter."),
                },
            },
        },
        "/api/debates/run": {
            "post": create_debate,
        },
        "/api/debates/{debateId}": {
            "get": {
                "summary": "Read a debate with its status, progress, turns and synthesis",
                "parameters": [debate_id.clone()],
                "responses": {
                    "200": json_response("The debate.", "DebateView"),
                    "400": error_response("Invalid debate id."),
                    "404": error_response("No such debate."),
                },
            },
        },
        "/api/debates/{debateId}/transcript": {
            "get": {
                "summary": "Download the debate transcript",
                "parameters": [debate_id],
                "responses": {
                    "200": { "description": "The transcript.", "content": { "text/markdown": { "schema": { "type": "string" } } } },
                    "400": error_response("Invalid debate id."),
                    "404": error_response("No such debate (`debate_not_found`), or the transcript is not written yet (`transcript_not_ready`); it is stored when the debate finishes."),
                },
            },
        },
        "/api/jobs": {
            "post": create_job,
            "get": {
                "summary": "List jobs, newest first",
                "parameters": filter_parameters(),
                "responses": {
                    "200": json_response("One page of jobs.", "JobPage"),
                    "400": error_response("Invalid query parameter."),
                },
            },
        },
        "/api/jobs/{jobId}": {
            "get": {
                "summary": "Read a job",
                "parameters": [job_id.clone()],
                "responses": {
                    "200": json_response("The job.", "Job"),
                    "400": error_response("Invalid job id."),
                    "404": error_response("No such job."),
                },
            },
        },
        "/api/jobs/{jobId}/cancel": {
            "post": {
                "summary": "Cancel a pending or running job",
                "description": "A running job's worker stops the attempt at its next heartbeat. Cancelling a cancelled job returns it unchanged.",
                "security": bearer,
                "parameters": [job_id.clone()],
                "responses": {
                    "200": json_response("The job after the cancel.", "Job"),
                    "400": error_response("Invalid job id."),
                    "401": error_response("Missing or wrong bearer token."),
                    "404": error_response("No such job."),
                    "409": error_response("The job is completed or failed."),
                },
            },
        },
        "/api/jobs/{jobId}/retry": {
            "post": {
                "summary": "Retry a failed or cancelled job under a new run id",
                "security": bearer,
                "parameters": [job_id],
                "responses": {
                    "202": json_response("The job is pending again.", "Job"),
                    "400": error_response("Invalid job id."),
                    "401": error_response("Missing or wrong bearer token."),
                    "404": error_response("No such job."),
                    "409": error_response("The job is pending, running or completed."),
                },
            },
        },
        "/api/runs": {
            "get": {
                "summary": "List runs, newest first",
                "description": "Pending and running runs come from the queue (`source: queue`), finished runs from the event store (`source: events`).",
                "parameters": filter_parameters(),
                "responses": {
                    "200": json_response("One page of runs.", "RunPage"),
                    "400": error_response("Invalid query parameter."),
                },
            },
        },
        "/api/runs/{runId}": {
            "get": {
                "summary": "Read a run with its events, or with its queue job when it has no events",
                "parameters": [run_id.clone()],
                "responses": {
                    "200": json_response("The run.", "RunDetail"),
                    "400": error_response("Invalid run id."),
                    "404": error_response("No such run."),
                },
            },
        },
        "/api/runs/{runId}/events": {
            "get": {
                "summary": "Read a run's events, or follow them live",
                "description": "With `Accept: text/event-stream` the response is a server-sent event stream: each event as `id:` (event id), `event:` (event type) and `data:` (the event as JSON), keep-alive comments while idle, resumption after the `Last-Event-ID` request header, and the end of the stream once the run reaches a terminal status.",
                "parameters": [
                    run_id,
                    { "name": "Last-Event-ID", "in": "header", "description": "Resume after this event id.", "schema": { "type": "string" } },
                ],
                "responses": {
                    "200": {
                        "description": "The events.",
                        "content": {
                            "application/json": { "schema": { "$ref": "#/components/schemas/EventList" } },
                            "text/event-stream": { "schema": { "type": "string" } },
                        },
                    },
                    "400": error_response("Invalid run id."),
                    "404": error_response("No such run."),
                },
            },
        },
        "/api/plugins": {
            "get": {
                "summary": "Plugins loaded by live workers, the job types they handle, and load errors",
                "responses": { "200": json_response("The plugins.", "PluginList") },
            },
        },
        "/api/workers": {
            "get": {
                "summary": "Worker records with a `stale` flag",
                "responses": { "200": json_response("The workers.", "WorkerList") },
            },
        },
        "/healthz": {
            "get": {
                "summary": "Liveness: the process is up",
                "responses": { "200": { "description": "Up.", "content": { "application/json": { "schema": { "type": "object" } } } } },
            },
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: the data directory is writable and the queue readable",
                "responses": {
                    "200": { "description": "Ready.", "content": { "application/json": { "schema": { "type": "object" } } } },
                    "503": { "description": "A check failed; `checks` names it.", "content": { "application/json": { "schema": { "type": "object" } } } },
                },
            },
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": { "200": { "description": "Text exposition format 0.0.4.", "content": { "text/plain": { "schema": { "type": "string" } } } } },
            },
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": { "200": { "description": "OpenAPI 3.1.", "content": { "application/json": { "schema": { "type": "object" } } } } },
            },
        },
    })
}

fn schemas() -> Value {
    let text = |max: usize| json!({ "type": "string", "maxLength": max });
    json!({
        "Id": {
            "type": "string",
            "pattern": "^[A-Za-z0-9_-]{1,64}$",
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": { "type": "string", "description": "Stable machine-readable code, such as `invalid_request` or `job_not_found`." },
                        "message": { "type": "string" },
                        "field": { "type": "string", "description": "The request field at fault, such as `personas[1].id`." },
                    },
                },
            },
        },
        "JobStatus": {
            "type": "string",
            "enum": ["pending", "running", "completed", "failed", "cancelled"],
        },
        "EnqueueRequest": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": false,
            "properties": {
                "type": { "type": "string", "pattern": "^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$" },
                "payload": { "description": "The plugin's input; null when absent." },
                "idempotencyKey": { "type": "string", "minLength": 1, "maxLength": 256 },
                "maxAttempts": { "type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS_LIMIT },
                "runAt": { "type": "string", "format": "date-time" },
                "priority": { "type": "integer", "minimum": PRIORITY_MIN, "maximum": PRIORITY_MAX, "default": 0 },
            },
        },
        "JobAccepted": {
            "type": "object",
            "required": ["jobId", "runId", "status", "links"],
            "properties": {
                "jobId": { "type": "string" },
                "runId": { "type": "string" },
                "status": { "$ref": "#/components/schemas/JobStatus" },
                "links": { "type": "object", "additionalProperties": { "type": "string" } },
            },
        },
        "Job": {
            "type": "object",
            "required": ["id", "type", "status", "attempts", "maxAttempts", "runId", "createdAt", "updatedAt"],
            "properties": {
                "id": { "type": "string" },
                "type": { "type": "string" },
                "payload": {},
                "status": { "$ref": "#/components/schemas/JobStatus" },
                "attempts": { "type": "integer" },
                "maxAttempts": { "type": "integer" },
                "priority": { "type": "integer" },
                "runAt": { "type": "string", "format": "date-time" },
                "idempotencyKey": { "type": ["string", "null"] },
                "runId": { "type": "string" },
                "lockedBy": { "type": ["string", "null"] },
                "lockedUntil": { "type": ["string", "null"], "format": "date-time" },
                "createdAt": { "type": "string", "format": "date-time" },
                "updatedAt": { "type": "string", "format": "date-time" },
                "startedAt": { "type": ["string", "null"], "format": "date-time" },
                "finishedAt": { "type": ["string", "null"], "format": "date-time" },
                "result": {},
                "lastError": { "type": ["object", "null"] },
                "requestId": { "type": ["string", "null"] },
            },
        },
        "JobPage": {
            "type": "object",
            "properties": {
                "jobs": { "type": "array", "items": { "$ref": "#/components/schemas/Job" } },
                "nextCursor": { "type": ["string", "null"] },
            },
        },
        "Persona": {
            "type": "object",
            "required": ["id", "displayName"],
            "additionalProperties": false,
            "properties": {
                "id": { "$ref": "#/components/schemas/Id" },
                "displayName": text(debate::MAX_DISPLAY_NAME_CHARS),
                "systemPrompt": text(debate::MAX_SYSTEM_PROMPT_CHARS),
                "role": text(debate::MAX_TRAIT_CHARS),
                "style": text(debate::MAX_TRAIT_CHARS),
                "values": { "type": "array", "maxItems": debate::MAX_VALUES, "items": text(debate::MAX_VALUE_CHARS) },
            },
        },
        "DebateSettings": {
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "rounds": { "type": "integer", "minimum": debate::ROUNDS.start(), "maximum": debate::ROUNDS.end(), "default": debate::DEFAULT_ROUNDS },
                "temperature": { "type": "number", "minimum": debate::TEMPERATURE.start(), "maximum": debate::TEMPERATURE.end(), "default": debate::DEFAULT_TEMPERATURE },
                "maxWordsPerTurn": { "type": "integer", "minimum": debate::MAX_WORDS_PER_TURN.start(), "maximum": debate::MAX_WORDS_PER_TURN.end(), "default": debate::DEFAULT_MAX_WORDS_PER_TURN },
                "includeModerator": { "type": "boolean", "default": true },
                "model": { "type": ["string", "null"], "maxLength": debate::MAX_MODEL_CHARS, "description": "Model name; the worker's LLM_MODEL when absent." },
            },
        },
        "DebateRequest": {
            "type": "object",
            "required": ["topic"],
            "additionalProperties": false,
            "properties": {
                "debateId": { "$ref": "#/components/schemas/Id", "description": "A new UUID v7 when absent." },
                "topic": { "type": "string", "minLength": debate::TOPIC_CHARS.start(), "maxLength": debate::TOPIC_CHARS.end(), "description": "Trimmed before the length check." },
                "context": text(debate::MAX_CONTEXT_CHARS),
                "personas": {
                    "type": "array",
                    "minItems": debate::PERSONA_COUNT.start(),
                    "maxItems": debate::PERSONA_COUNT.end(),
                    "items": { "$ref": "#/components/schemas/Persona" },
                    "description": "Unique ids; a default panel of three personas when absent.",
                },
                "settings": { "$ref": "#/components/schemas/DebateSettings" },
            },
        },
        "DebateAccepted": {
            "type": "object",
            "required": ["debateId", "runId", "jobId", "status", "links"],
            "properties": {
                "debateId": { "type": "string" },
                "runId": { "type": "string" },
                "jobId": { "type": "string" },
                "status": { "$ref": "#/components/schemas/JobStatus" },
                "links": {
                    "type": "object",
                    "required": ["self", "debate", "run", "events", "transcript", "job"],
                    "additionalProperties": { "type": "string" },
                },
            },
        },
        "DebateView": {
            "type": "object",
            "description": "The stored debate (its request with defaults filled in, createdAt, requestId, jobId, runId) and the state of its run.",
            "properties": {
                "debateId": { "type": "string" },
                "topic": { "type": "string" },
                "context": { "type": "string" },
                "personas": { "type": "array", "items": { "$ref": "#/components/schemas/Persona" } },
                "settings": { "$ref": "#/components/schemas/DebateSettings" },
                "createdAt": { "type": "string", "format": "date-time" },
                "requestId": { "type": ["string", "null"] },
                "jobId": { "type": "string" },
                "runId": { "type": "string" },
                "status": { "type": "string", "description": "A job status, or `unknown` when the job was pruned." },
                "attempt": { "type": ["integer", "null"] },
                "progress": { "type": ["object", "null"], "description": "The latest Progress event's data (done, total, message) with `at`." },
                "turns": { "type": "array", "items": { "type": "object" }, "description": "DebateTurn event data, one per turn, in turn order." },
                "synthesis": { "type": ["string", "null"] },
                "usage": {
                    "type": "object",
                    "properties": {
                        "promptTokens": { "type": "integer" },
                        "completionTokens": { "type": "integer" },
                        "totalTokens": { "type": "integer" },
                    },
                },
                "error": { "type": ["object", "null"] },
                "startedAt": { "type": ["string", "null"], "format": "date-time" },
                "finishedAt": { "type": ["string", "null"], "format": "date-time" },
                "links": { "type": "object", "additionalProperties": { "type": "string" } },
            },
        },
        "DebatePage": {
            "type": "object",
            "properties": {
                "debates": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "debateId": { "type": "string" },
                            "topic": { "type": "string" },
                            "createdAt": { "type": "string", "format": "date-time" },
                            "jobId": { "type": "string" },
                            "runId": { "type": "string" },
                            "status": { "type": "string" },
                        },
                    },
                },
                "nextCursor": { "type": ["string", "null"] },
            },
        },
        "Run": {
            "type": "object",
            "required": ["runId", "status", "source", "createdAt", "updatedAt"],
            "properties": {
                "runId": { "type": "string" },
                "status": { "type": "string" },
                "source": { "type": "string", "enum": ["events", "queue"] },
                "jobId": { "type": ["string", "null"] },
                "jobType": { "type": ["string", "null"] },
                "attempt": { "type": ["integer", "null"] },
                "requestId": { "type": ["string", "null"] },
                "createdAt": { "type": "string", "format": "date-time" },
                "updatedAt": { "type": "string", "format": "date-time" },
                "finishedAt": { "type": ["string", "null"], "format": "date-time" },
                "latencyMs": { "type": ["integer", "null"] },
                "error": { "type": ["object", "null"] },
            },
        },
        "RunDetail": {
            "allOf": [
                { "$ref": "#/components/schemas/Run" },
                {
                    "type": "object",
                    "properties": {
                        "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } },
                        "job": { "$ref": "#/components/schemas/Job" },
                    },
                },
            ],
        },
        "RunPage": {
            "type": "object",
            "properties": {
                "runs": { "type": "array", "items": { "$ref": "#/components/schemas/Run" } },
                "nextCursor": { "type": ["string", "null"] },
            },
        },
        "Event": {
            "type": "object",
            "required": ["id", "ts", "eventType", "component", "runId", "level"],
            "properties": {
                "id": { "type": "string" },
                "ts": { "type": "string", "format": "date-time" },
                "eventType": { "type": "string" },
                "component": { "type": "string" },
                "runId": { "type": "string" },
                "jobId": { "type": ["string", "null"] },
                "jobType": { "type": ["string", "null"] },
                "requestId": { "type": ["string", "null"] },
                "attempt": { "type": ["integer", "null"] },
                "level": { "type": "string", "enum": ["debug", "info", "warn", "error"] },
                "latencyMs": { "type": ["integer", "null"] },
                "data": {},
                "error": { "type": ["object", "null"] },
            },
        },
        "EventList": {
            "type": "object",
            "properties": {
                "runId": { "type": "string" },
                "events": { "type": "array", "items": { "$ref": "#/components/schemas/Event" } },
            },
        },
        "WorkerList": {
            "type": "object",
            "properties": {
                "workers": { "type": "array", "items": { "type": "object", "properties": { "stale": { "type": "boolean" } } } },
            },
        },
        "PluginList": {
            "type": "object",
            "properties": {
                "plugins": { "type": "array", "items": { "type": "object" } },
                "jobTypes": { "type": "object", "additionalProperties": { "type": "array", "items": { "type": "string" } } },
                "loadErrors": { "type": "array", "items": { "type": "object" } },
            },
        },
    })
}

/// Builds the whole OpenAPI document.
pub fn openapi_document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "jobhost",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Durable jobs run by sandboxed WebAssembly plugins. Every response carries X-Request-Id (the client's when it is 1 to 64 characters of letters, digits, '-' and '_', otherwise a new id); errors have the body {\"error\": {\"code\", \"message\", \"field\"?}}.",
        },
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "Required on POST routes when the server has API_TOKEN set." },
            },
        },
    })
}
