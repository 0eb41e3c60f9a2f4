//! A scripted model API on a local address: answers the Anthropic Messages
//! API (streamed or not) and the OpenAI Responses API (streamed, as Codex
//! uses it) with the tool calls a test wants, one per turn, then a final
//! text. A real agent CLI pointed at it (its base-URL setting)
//! runs those tools for real. It also serves files (`GET /files/NAME`) for
//! downloads and package installs. No traffic leaves the machine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

/// One tool call: the tool's name and its input.
pub struct Step {
    pub tool: &'static str,
    pub input: Value,
}

pub fn bash(command: &str) -> Step {
    Step {
        tool: "Bash",
        input: json!({ "command": command, "description": "scripted step" }),
    }
}

/// A Codex shell call (its `exec_command` tool); `apply_patch` commands
/// are Codex's own edit tool, applied by the CLI itself.
pub fn exec_command(cmd: &str) -> Step {
    Step {
        tool: "exec_command",
        input: json!({ "cmd": cmd, "yield_time_ms": 60000 }),
    }
}

struct Shared {
    steps: Vec<Step>,
    files: HashMap<String, Vec<u8>>,
    /// Each request's path and body, in order.
    requests: Mutex<Vec<(String, Value)>>,
}

pub struct ModelApi {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl ModelApi {
    /// Serves on `bind` (port 0: any free one).
    pub fn start(bind: SocketAddr, steps: Vec<Step>, files: HashMap<String, Vec<u8>>) -> ModelApi {
        let listener = TcpListener::bind(bind).unwrap_or_else(|e| panic!("bind {bind}: {e}"));
        Self::serve(listener, steps, files)
    }

    /// Serves on a listener already bound (its address known before the
    /// steps that name it are written: never released and bound again,
    /// which a parallel test's socket can take in between).
    pub fn serve(
        listener: TcpListener,
        steps: Vec<Step>,
        files: HashMap<String, Vec<u8>>,
    ) -> ModelApi {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            steps,
            files,
            requests: Mutex::new(Vec::new()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let sh = sh.clone();
                        std::thread::spawn(move || {
                            let _ = serve(s, &sh);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        ModelApi { addr, shared, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests to the messages endpoint that carried the agent's tools.
    pub fn agent_turns(&self) -> usize {
        self.shared
            .requests
            .lock()
            .map(|r| r.iter().filter(|(p, b)| agent_turn(p, b)).count())
            .unwrap_or(0)
    }

    /// The tool results the agent sent back, in order (their text).
    pub fn tool_results(&self) -> Vec<String> {
        let reqs = self
            .shared
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let Some((_, last)) = reqs.iter().rev().find(|(p, b)| agent_turn(p, b)) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for i in last["input"].as_array().into_iter().flatten() {
            if i["type"] == "function_call_output" {
                out.push(match &i["output"] {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                });
            }
        }
        for m in last["messages"].as_array().into_iter().flatten() {
            for c in m["content"].as_array().into_iter().flatten() {
                if c["type"] == "tool_result" {
                    out.push(match &c["content"] {
                        Value::String(s) => s.clone(),
                        v => v.to_string(),
                    });
                }
            }
        }
        out
    }
}

impl Drop for ModelApi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A request of the agent's own loop (it offers its shell tool), not a
/// side request (a title, a token count).
fn agent_turn(path: &str, body: &Value) -> bool {
    (path.starts_with("/v1/messages") || path.starts_with("/v1/responses")) && has_tools(body)
}

fn has_tools(body: &Value) -> bool {
    body["tools"].as_array().is_some_and(|t| {
        t.iter()
            .any(|t| t["name"] == "Bash" || t["name"] == "exec_command")
    })
}

fn tool_results_in(body: &Value) -> usize {
    let messages = body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|c| c["type"] == "tool_result");
    let responses = body["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["type"] == "function_call_output");
    messages.count() + responses.count()
}

/// The Responses API's stream for this turn: one function call, or the
/// final message.
fn responses_stream(sh: &Shared, body: &Value) -> Vec<u8> {
    let turn = tool_results_in(body);
    let item = match sh.steps.get(turn).filter(|_| has_tools(body)) {
        Some(step) => json!({"type": "function_call", "id": format!("fc_{turn:04}"),
            "call_id": format!("call_{turn:04}"), "name": step.tool,
            "arguments": step.input.to_string(), "status": "completed"}),
        None => json!({"type": "message", "role": "assistant", "id": "msg_1",
            "content": [{"type": "output_text", "text": "done"}]}),
    };
    let id = format!("resp_{turn:04}");
    let usage = json!({"input_tokens": 1, "input_tokens_details": null, "output_tokens": 1,
        "output_tokens_details": null, "total_tokens": 2});
    let events = [
        (
            "response.created",
            json!({"type": "response.created", "response": {"id": id}}),
        ),
        (
            "response.output_item.done",
            json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
        ),
        (
            "response.completed",
            json!({"type": "response.completed", "response": {"id": id, "usage": usage}}),
        ),
    ];
    let mut out = String::new();
    for (e, d) in events {
        out.push_str(&format!("event: {e}\ndata: {d}\n\n"));
    }
    out.into_bytes()
}

fn serve(s: TcpStream, sh: &Shared) -> std::io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(120)))?;
    let mut w = s.try_clone()?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let path = parts.next().unwrap_or("").to_owned();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h)? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body)?;
        let (status, ctype, out) = respond(sh, &method, &path, &body);
        write!(
            w,
            "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\n\r\n",
            out.len()
        )?;
        w.write_all(&out)?;
        w.flush()?;
    }
}

fn respond(
    sh: &Shared,
    method: &str,
    path: &str,
    body: &[u8],
) -> (&'static str, &'static str, Vec<u8>) {
    if method == "GET" {
        if let Some(f) = path.strip_prefix("/files/").and_then(|n| sh.files.get(n)) {
            return ("200 OK", "application/octet-stream", f.clone());
        }
        return ("404 Not Found", "text/plain", b"not found".to_vec());
    }
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Ok(mut r) = sh.requests.lock() {
        r.push((path.to_owned(), body.clone()));
    }
    if path.starts_with("/v1/responses") {
        return ("200 OK", "text/event-stream", responses_stream(sh, &body));
    }
    if !path.starts_with("/v1/messages") || path.starts_with("/v1/messages/count_tokens") {
        return (
            "200 OK",
            "application/json",
            br#"{"input_tokens":1}"#.to_vec(),
        );
    }
    let turn = tool_results_in(&body);
    let (content, stop) = match sh.steps.get(turn).filter(|_| has_tools(&body)) {
        Some(step) => (
            vec![
                json!({"type": "tool_use", "id": format!("toolu_{turn:04}"), "name": step.tool, "input": step.input}),
            ],
            "tool_use",
        ),
        None => (vec![json!({"type": "text", "text": "done"})], "end_turn"),
    };
    let model = body["model"].as_str().unwrap_or("model").to_owned();
    let usage = json!({"input_tokens": 1, "output_tokens": 1});
    if body["stream"] != true {
        let msg = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage});
        return ("200 OK", "application/json", msg.to_string().into_bytes());
    }
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": usage}}),
    )];
    for (i, c) in content.iter().enumerate() {
        let (start, delta) = if c["type"] == "text" {
            (
                json!({"type": "text", "text": ""}),
                json!({"type": "text_delta", "text": c["text"]}),
            )
        } else {
            (
                json!({"type": "tool_use", "id": c["id"], "name": c["name"], "input": {}}),
                json!({"type": "input_json_delta", "partial_json": c["input"].to_string()}),
            )
        };
        events.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": i, "content_block": start}),
        ));
        events.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": i, "delta": delta}),
        ));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": 1}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    let mut out = String::new();
    for (e, d) in events {
        out.push_str(&format!("event: {e}\ndata: {d}\n\n"));
    }
    ("200 OK", "text/event-stream", out.into_bytes())
}
