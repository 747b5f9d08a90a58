//! A Responses request as a chat completions request: input items, instructions, function
//! tools, the parameters chat has; what chat cannot carry is refused naming its `param`.

use std::borrow::Cow;
use std::sync::LazyLock;

use serde::Deserialize;
use serde_json::Value;

use crate::bridge::chat;
use crate::error::RelayError;

#[derive(Deserialize)]
struct Request {
    model: String,
    #[serde(default)]
    input: Option<Input>,
    #[serde(default)]
    instructions: Option<String>,
    #[serde(default)]
    tools: Option<Vec<InTool>>,
    #[serde(default)]
    tool_choice: Option<InToolChoice>,
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    text: Option<TextConfig>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    previous_response_id: Option<String>,
    #[serde(default)]
    conversation: Option<Value>,
    #[serde(default)]
    prompt: Option<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    Text(String),
    Items(Vec<InItem>),
}

/// One input item. Read field by field rather than as a tagged enum: a message item may
/// come without its `type`, and a refusal names the item's place.
#[derive(Deserialize)]
struct InItem {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    content: Option<InContent>,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    output: Option<InContent>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InContent {
    Text(String),
    Parts(Vec<InPart>),
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum InPart {
    InputText {
        text: String,
    },
    OutputText {
        text: String,
    },
    Refusal {
        refusal: String,
    },
    InputImage {
        #[serde(default)]
        image_url: Option<ImageRef>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ImageRef {
    Url(String),
    Object { url: String },
}

#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<Value>,
    #[serde(default)]
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(String),
    Typed {
        #[serde(rename = "type")]
        kind: String,
        #[serde(default)]
        name: Option<String>,
    },
}

#[derive(Deserialize)]
struct TextConfig {
    #[serde(default)]
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Format {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    strict: Option<bool>,
}

fn invalid(message: impl Into<String>, param: impl Into<String>) -> RelayError {
    RelayError::bad_request(message).with_param(param)
}

pub(super) fn not_a_request(e: serde_json::Error) -> RelayError {
    RelayError::bad_request(format!("the request is not a valid Responses request: {e}"))
}

/// A function tool's schema when it gives none.
static NO_PARAMETERS: LazyLock<Value> = LazyLock::new(|| serde_json::json!({"type": "object", "properties": {}}));

/// The chat completions request for a Responses request.
pub fn request(body: &str) -> Result<String, RelayError> {
    let req: Request = serde_json::from_str(body).map_err(not_a_request)?;
    if req.previous_response_id.is_some() {
        // The create path puts the stored conversation into `input` and takes the field out.
        return Err(invalid("previous_response_id: no stored response is available here", "previous_response_id"));
    }
    if req.conversation.is_some() {
        return Err(invalid("conversation: conversations are not supported on this relay", "conversation"));
    }
    if req.prompt.is_some() {
        return Err(invalid("prompt: prompt templates are not supported on this channel", "prompt"));
    }
    let mut messages = Vec::new();
    if let Some(s) = req.instructions.as_deref().filter(|s| !s.is_empty()) {
        messages.push(text_message("system", Cow::Borrowed(s)));
    }
    match &req.input {
        None => {}
        Some(Input::Text(s)) => messages.push(text_message("user", Cow::Borrowed(s))),
        Some(Input::Items(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(i, item, &mut messages)?;
            }
        }
    }
    if messages.is_empty() {
        return Err(invalid("input: the request has no input", "input"));
    }
    let tools = match &req.tools {
        None => None,
        Some(t) if t.is_empty() => None,
        Some(tools) => Some(tools.iter().enumerate().map(|(i, t)| tool(i, t)).collect::<Result<Vec<_>, _>>()?),
    };
    let tool_choice = match &req.tool_choice {
        None => None,
        Some(InToolChoice::Mode(m)) => Some(chat::ToolChoice::Mode(match m.as_str() {
            "auto" => "auto",
            "none" => "none",
            "required" => "required",
            other => {
                return Err(invalid(
                    format!(
                        "tool_choice: Invalid value: '{other}'. Supported values are: 'auto', 'none' and 'required'."
                    ),
                    "tool_choice",
                ));
            }
        })),
        Some(InToolChoice::Typed { kind, name }) => match (kind.as_str(), name) {
            ("function", Some(name)) => {
                Some(chat::ToolChoice::Named { kind: "function", function: chat::Named { name } })
            }
            ("function", None) => return Err(invalid("tool_choice.name: Field required", "tool_choice.name")),
            (other, _) => {
                return Err(invalid(
                    format!(
                        "tool_choice: the tool choice type '{other}' is not supported on this channel (only function tools reach a chat completions vendor)"
                    ),
                    "tool_choice",
                ));
            }
        },
    };
    let response_format = match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        None => None,
        Some(f) => format(f)?,
    };
    let stream = req.stream == Some(true);
    let out = chat::Request {
        model: &req.model,
        messages,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: None,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        user: req.user.as_deref(),
        stream: stream.then_some(true),
        stream_options: stream.then_some(chat::StreamOptions { include_usage: true }),
        response_format,
    };
    serde_json::to_string(&out).map_err(|e| RelayError::plugin(format!("the chat request could not be written: {e}")))
}

fn text_message<'a>(role: &'static str, text: Cow<'a, str>) -> chat::Message<'a> {
    chat::Message { role, content: Some(chat::Content::Text(text)), tool_calls: None, tool_call_id: None }
}

/// One input item as chat messages: messages by role, a `function_call` on the assistant
/// message before it (or a new one), a `function_call_output` as a `tool` message.
fn input_item<'a>(i: usize, item: &'a InItem, out: &mut Vec<chat::Message<'a>>) -> Result<(), RelayError> {
    match item.kind.as_deref() {
        None | Some("message") => {
            let Some(role) = item.role.as_deref() else {
                return Err(invalid(format!("input[{i}].role: Field required"), format!("input[{i}].role")));
            };
            let Some(content) = &item.content else {
                return Err(invalid(format!("input[{i}].content: Field required"), format!("input[{i}].content")));
            };
            match role {
                "user" => out.push(user_message(i, content)?),
                "assistant" => {
                    let text = joined_text(i, content, "input", true)?;
                    out.push(chat::Message {
                        role: "assistant",
                        content: Some(chat::Content::Text(text)),
                        tool_calls: None,
                        tool_call_id: None,
                    });
                }
                // `developer` is OpenAI's newer name for `system`; every chat vendor knows `system`.
                "system" | "developer" => out.push(text_message("system", joined_text(i, content, "input", false)?)),
                other => {
                    return Err(invalid(
                        format!(
                            "input[{i}].role: Invalid value: '{other}'. Supported values are: 'user', 'assistant', 'system' and 'developer'."
                        ),
                        format!("input[{i}].role"),
                    ));
                }
            }
        }
        Some("function_call") => {
            let (Some(call_id), Some(name)) = (&item.call_id, &item.name) else {
                return Err(invalid(
                    format!("input[{i}]: a function_call item needs call_id and name"),
                    format!("input[{i}]"),
                ));
            };
            let arguments = item.arguments.clone().unwrap_or_else(|| "{}".to_string());
            let call =
                chat::ToolCall { id: call_id, kind: "function", function: chat::FunctionCall { name, arguments } };
            match out.last_mut() {
                Some(m) if m.role == "assistant" => m.tool_calls.get_or_insert_with(Vec::new).push(call),
                _ => out.push(chat::Message {
                    role: "assistant",
                    content: None,
                    tool_calls: Some(vec![call]),
                    tool_call_id: None,
                }),
            }
        }
        Some("function_call_output") => {
            let Some(call_id) = &item.call_id else {
                return Err(invalid(format!("input[{i}].call_id: Field required"), format!("input[{i}].call_id")));
            };
            let text = match &item.output {
                None => Cow::Borrowed(""),
                Some(output) => joined_text(i, output, "input", false)?,
            };
            out.push(chat::Message {
                role: "tool",
                content: Some(chat::Content::Text(text)),
                tool_calls: None,
                tool_call_id: Some(call_id),
            });
        }
        // Earlier turns' reasoning: chat has no place for it.
        Some("reasoning") => {}
        Some(other) => {
            return Err(invalid(
                format!(
                    "input[{i}]: the item type '{other}' is not supported on this channel (only messages, function_call and function_call_output reach a chat completions vendor)"
                ),
                format!("input[{i}].type"),
            ));
        }
    }
    Ok(())
}

fn user_message(i: usize, content: &InContent) -> Result<chat::Message<'_>, RelayError> {
    let parts = match content {
        InContent::Text(s) => return Ok(text_message("user", Cow::Borrowed(s))),
        InContent::Parts(p) => p,
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p {
            InPart::InputText { text } | InPart::OutputText { text } => out.push(chat::Part::Text { text }),
            InPart::InputImage { image_url: Some(ImageRef::Url(url) | ImageRef::Object { url }) } => {
                out.push(chat::Part::ImageUrl { image_url: chat::ImageUrl { url: Cow::Borrowed(url) } })
            }
            InPart::InputImage { image_url: None } => {
                return Err(invalid(
                    format!(
                        "input[{i}].content[{j}].image_url: an image by file_id is not supported on this channel; give image_url"
                    ),
                    format!("input[{i}].content[{j}].image_url"),
                ));
            }
            InPart::Refusal { .. } | InPart::Other => return Err(unsupported_part(i, j, "input")),
        }
    }
    Ok(match out.as_slice() {
        [chat::Part::Text { text }] => text_message("user", Cow::Borrowed(text)),
        _ => chat::Message {
            role: "user",
            content: Some(chat::Content::Parts(out)),
            tool_calls: None,
            tool_call_id: None,
        },
    })
}

fn unsupported_part(i: usize, j: usize, field: &str) -> RelayError {
    invalid(
        format!(
            "{field}[{i}].content[{j}]: this content part type is not supported here on this channel (text and image_url reach a chat completions vendor)"
        ),
        format!("{field}[{i}].content[{j}]"),
    )
}

/// Content that chat carries as text (assistant, system, tool output): its text parts
/// joined; `assistant` also takes its earlier refusals.
fn joined_text<'a>(i: usize, content: &'a InContent, field: &str, assistant: bool) -> Result<Cow<'a, str>, RelayError> {
    let parts = match content {
        InContent::Text(s) => return Ok(Cow::Borrowed(s)),
        InContent::Parts(p) => p,
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p {
            InPart::InputText { text } | InPart::OutputText { text } => texts.push(text.as_str()),
            InPart::Refusal { refusal } if assistant => texts.push(refusal.as_str()),
            _ => return Err(unsupported_part(i, j, field)),
        }
    }
    Ok(match texts.as_slice() {
        [one] => Cow::Borrowed(one),
        _ => Cow::Owned(texts.concat()),
    })
}

fn tool(i: usize, t: &InTool) -> Result<chat::Tool<'_>, RelayError> {
    if t.kind != "function" {
        return Err(invalid(
            format!(
                "tools[{i}]: the tool type '{}' is not supported on this channel (only function tools reach a chat completions vendor)",
                t.kind
            ),
            format!("tools[{i}].type"),
        ));
    }
    let Some(name) = t.name.as_deref() else {
        return Err(invalid(format!("tools[{i}].name: Field required"), format!("tools[{i}].name")));
    };
    let parameters = t.parameters.as_ref().filter(|p| !p.is_null()).unwrap_or(&NO_PARAMETERS);
    Ok(chat::Tool {
        kind: "function",
        function: chat::Function { name, description: t.description.as_deref(), parameters, strict: t.strict },
    })
}

fn format(f: &Format) -> Result<Option<Value>, RelayError> {
    Ok(match f.kind.as_str() {
        "text" => None,
        "json_object" => Some(serde_json::json!({"type": "json_object"})),
        "json_schema" => {
            let Some(name) = &f.name else {
                return Err(invalid("text.format.name: Field required", "text.format.name"));
            };
            let mut schema = serde_json::json!({"name": name, "schema": f.schema.clone().unwrap_or(Value::Null)});
            if let Some(d) = &f.description {
                schema["description"] = Value::String(d.clone());
            }
            if let Some(s) = f.strict {
                schema["strict"] = Value::Bool(s);
            }
            Some(serde_json::json!({"type": "json_schema", "json_schema": schema}))
        }
        other => {
            return Err(invalid(
                format!(
                    "text.format.type: Invalid value: '{other}'. Supported values are: 'text', 'json_object' and 'json_schema'."
                ),
                "text.format.type",
            ));
        }
    })
}
