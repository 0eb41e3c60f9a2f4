//! Rego policies through regorus.
//!
//! Each `.rego` file is one policy, compiled once at load with the entry
//! point `data.agentguard.decisions`; `input` is the event's JSON form (as
//! `agentguard events` prints it, identity included). A header comment
//! `# kinds: exec,connect` says which event kinds it is evaluated for
//! (`# kinds: all` for every kind); `# mode: audit` is optional.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::vm::ExecutionMode;
use regorus::rvm::{Program, RegoVM};
use regorus::Value;

use super::Diagnostic;
use crate::alert::{Action, Decision, KillScope, Mode, Severity};
use crate::event::{Event, Kind};

/// The rule every policy defines.
pub const ENTRY_POINT: &str = "data.agentguard.decisions";

/// A compiled Rego policy.
pub struct RegoPolicy {
    name: Arc<str>,
    file: PathBuf,
    kinds: Vec<Kind>,
    mode: Mode,
    compiled: regorus::CompiledPolicy,
    /// The policy compiled to regorus's bytecode VM (the only way it runs).
    program: Arc<Program>,
    /// Idle VMs, reused: a VM needs `&mut` and evaluation takes `&self`.
    vms: Mutex<Vec<RegoVM>>,
}

/// Idle VMs kept per policy (about one per evaluating thread).
const MAX_IDLE_VMS: usize = 8;

impl std::fmt::Debug for RegoPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegoPolicy")
            .field("name", &self.name)
            .field("file", &self.file)
            .field("kinds", &self.kinds)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// What the header comments declare.
struct Header {
    kinds: Vec<Kind>,
    mode: Mode,
}

fn parse_header(file: &Path, src: &str) -> Result<Header, Vec<Diagnostic>> {
    let mut kinds = None;
    let mut mode = Mode::Enforce;
    let mut errs = Vec::new();
    for (n, line) in src.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        // The header is the leading comment block.
        let Some(c) = t.strip_prefix('#') else { break };
        let c = c.trim();
        if let Some(v) = c.strip_prefix("kinds:") {
            let v = v.trim();
            if v == "all" || v == "*" {
                kinds = Some(Kind::ALL.to_vec());
                continue;
            }
            let mut ks = Vec::new();
            for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                match Kind::parse(name) {
                    Some(k) => ks.push(k),
                    None => errs.push(Diagnostic::new(
                        file,
                        n + 1,
                        line.find(name).map_or(1, |i| i + 1),
                        format!("unknown event kind {name:?} in `# kinds:`"),
                    )),
                }
            }
            kinds = Some(ks);
        } else if let Some(v) = c.strip_prefix("mode:") {
            match v.trim() {
                "enforce" => mode = Mode::Enforce,
                "audit" => mode = Mode::Audit,
                other => errs.push(Diagnostic::new(
                    file,
                    n + 1,
                    1,
                    format!("unknown mode {other:?} in `# mode:` (enforce or audit)"),
                )),
            }
        }
    }
    match kinds {
        Some(ref k) if k.is_empty() && errs.is_empty() => errs.push(Diagnostic::new(
            file,
            1,
            1,
            "`# kinds:` names no event kind".into(),
        )),
        None => errs.push(Diagnostic::new(
            file,
            1,
            1,
            "missing `# kinds: KIND,...` header comment (which events this policy handles; `all` for every kind)".into(),
        )),
        _ => {}
    }
    match (kinds, errs.is_empty()) {
        (Some(kinds), true) => Ok(Header { kinds, mode }),
        _ => Err(errs),
    }
}

/// Turns a regorus error ("file:line:col: error: ...") into a diagnostic.
pub(crate) fn diag_from_regorus(file: &Path, err: &anyhow::Error) -> Diagnostic {
    let text = format!("{err:#}");
    let name = file.display().to_string();
    // regorus names the place as "--> path:line:col" and the reason on a
    // line starting with "error:".
    if let Some(pos) = text.find(&format!("--> {name}:")) {
        let rest = &text[pos + 4 + name.len() + 1..];
        let loc = rest.lines().next().unwrap_or("");
        let mut it = loc.split(':');
        let reason = text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error:"))
            .map_or_else(|| text.trim().to_owned(), |r| r.trim().to_owned());
        if let (Some(Ok(l)), Some(Ok(c))) = (
            it.next().map(|x| x.trim().parse::<usize>()),
            it.next().map(|x| x.trim().parse::<usize>()),
        ) {
            // Diagnostics are 1-based; regorus gives column 0 for some
            // errors at the start of a line.
            return Diagnostic::new(file, l.max(1), c.max(1), reason);
        }
    }
    if let Some(pos) = text.find(&format!("{name}:")) {
        let rest = &text[pos + name.len() + 1..];
        let mut it = rest.splitn(3, ':');
        if let (Some(l), Some(c), Some(msg)) = (it.next(), it.next(), it.next()) {
            if let (Ok(l), Ok(c)) = (l.trim().parse::<usize>(), c.trim().parse::<usize>()) {
                let msg = msg.trim().trim_start_matches("error:").trim();
                return Diagnostic::new(file, l.max(1), c.max(1), msg.to_owned());
            }
        }
    }
    Diagnostic::new(file, 1, 1, text)
}

/// Deepest `{`/`[` nesting a Rego file may have. regorus's parser tries a
/// comprehension at each `{` and `[` and parses again when it is none, so
/// its time doubles with each level: about a second at 16 levels, hours at
/// 30, for a load (`policy lint`, a reload) that must not hang.
pub const MAX_NESTING: usize = 16;

/// Where `src` first nests `{`/`[` deeper than [`MAX_NESTING`] (1-based
/// line and column), strings and comments aside.
fn too_deep(src: &str) -> Option<(usize, usize)> {
    #[derive(PartialEq)]
    enum In {
        Code,
        Str { escaped: bool },
        Raw,
        Comment,
    }
    let mut at = In::Code;
    let mut depth = 0usize;
    let (mut line, mut col) = (1, 0);
    for c in src.chars() {
        if c == '\n' {
            line += 1;
            col = 0;
        } else {
            col += 1;
        }
        at = match at {
            In::Code => match c {
                '#' => In::Comment,
                '"' => In::Str { escaped: false },
                '`' => In::Raw,
                '{' | '[' => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some((line, col));
                    }
                    In::Code
                }
                '}' | ']' => {
                    depth = depth.saturating_sub(1);
                    In::Code
                }
                _ => In::Code,
            },
            In::Str { escaped: true } => In::Str { escaped: false },
            In::Str { escaped: false } => match c {
                '\\' => In::Str { escaped: true },
                '"' | '\n' => In::Code,
                _ => In::Str { escaped: false },
            },
            In::Raw if c == '`' => In::Code,
            In::Comment if c == '\n' => In::Code,
            other => other,
        };
    }
    None
}

/// A regorus engine holding one policy file (and, for tests, its test file).
pub(crate) fn engine_for(files: &[(&Path, &str)]) -> Result<regorus::Engine, Vec<Diagnostic>> {
    let mut engine = regorus::Engine::new();
    for (file, src) in files {
        if let Some((line, col)) = too_deep(src) {
            return Err(vec![Diagnostic::new(
                file,
                line,
                col,
                format!(
                    "`{{`/`[` nested more than {MAX_NESTING} deep: regorus's parser takes time exponential in the depth; name the inner part in a rule or function of its own"
                ),
            )]);
        }
        engine
            .add_policy(file.display().to_string(), (*src).to_owned())
            .map_err(|e| vec![diag_from_regorus(file, &e)])?;
    }
    Ok(engine)
}

impl RegoPolicy {
    pub(crate) fn load(file: &Path, src: &str) -> Result<RegoPolicy, Vec<Diagnostic>> {
        let header = parse_header(file, src)?;
        let mut engine = engine_for(&[(file, src)])?;
        let packages = engine
            .get_packages()
            .map_err(|e| vec![diag_from_regorus(file, &e)])?;
        // Errors about the policy as a whole point at its `package` line.
        let package_line = || {
            src.lines()
                .position(|l| l.trim_start().starts_with("package "))
                .map_or(1, |i| i + 1)
        };
        if !packages.iter().any(|p| p == "data.agentguard") {
            return Err(vec![Diagnostic::new(
                file,
                package_line(),
                1,
                format!(
                    "a policy must be `package agentguard` (found {})",
                    packages.join(", ")
                ),
            )]);
        }
        let compiled = engine
            .compile_with_entrypoint(&ENTRY_POINT.into())
            .map_err(|e| vec![diag_from_regorus(file, &e)])?;
        // Only what the bytecode VM runs is loaded: regorus's tree
        // interpreter recurses on the thread's stack, so a recursive
        // function in a policy it runs overflows the stack and aborts the
        // daemon (found by fuzzing); the VM keeps call frames on the heap.
        let program = match Compiler::compile_from_policy(&compiled, &[ENTRY_POINT]) {
            Ok(p) => p,
            Err(e) => {
                return Err(vec![Diagnostic::new(
                    file,
                    package_line(),
                    1,
                    format!(
                        "this policy uses what regorus's bytecode VM cannot run ({e}); \
                         agentguard runs Rego policies on the VM only (its tree interpreter \
                         can overflow the stack on recursion). `with` belongs in *_test.rego files"
                    ),
                )]);
            }
        };
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(RegoPolicy {
            name: name.into(),
            file: file.to_owned(),
            kinds: header.kinds,
            mode: header.mode,
            compiled,
            program,
            vms: Mutex::new(Vec::new()),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn file(&self) -> &Path {
        &self.file
    }
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Evaluates with a prepared input; appends the decisions and returns
    /// how many decision objects were malformed, or the evaluation error.
    pub fn evaluate(&self, input: &Value, out: &mut Vec<Decision>) -> Result<usize, String> {
        let v = self
            .run(input)
            .map_err(|e| format!("{}: {e}", self.file.display()))?;
        let mut bad = 0;
        let mut push = |d: &Value| match self.decision(d) {
            Some(d) => out.push(d),
            None => bad += 1,
        };
        match &v {
            Value::Undefined | Value::Null => {}
            Value::Set(s) => s.iter().for_each(&mut push),
            Value::Array(a) => a.iter().for_each(&mut push),
            _ => bad += 1,
        }
        Ok(bad)
    }

    fn run(&self, input: &Value) -> Result<Value, String> {
        let program = &self.program;
        let idle = self.vms.lock().ok().and_then(|mut v| v.pop());
        let mut vm = idle.unwrap_or_else(|| {
            let mut vm = RegoVM::new_with_policy(self.compiled.clone());
            vm.load_program(Arc::clone(program));
            // Call frames on the heap, not on this thread's stack: a
            // recursive function (neither compiler refuses one) then ends
            // in the VM's instruction limit, an evaluation error, instead
            // of overflowing the stack, which aborts the daemon.
            vm.set_execution_mode(ExecutionMode::Suspendable);
            vm
        });
        vm.set_input(input.clone());
        let out = vm.execute().map_err(|e| e.to_string())?;
        // A VM that failed is dropped above (by `?`), not reused.
        if let Ok(mut idle) = self.vms.lock() {
            if idle.len() < MAX_IDLE_VMS {
                idle.push(vm);
            }
        }
        Ok(out)
    }

    fn decision(&self, v: &Value) -> Option<Decision> {
        let o = v.as_object().ok()?;
        let get = |k: &str| o.get(&Value::from(k)).and_then(|v| v.as_string().ok());
        let parse = |k: &str| -> Option<String> { Some(format!("\"{}\"", get(k)?)) };
        let action: Action = serde_json::from_str(&parse("action")?).ok()?;
        let severity: Severity = serde_json::from_str(&parse("severity")?).ok()?;
        let kill_scope: KillScope = match get("kill_scope") {
            Some(s) => serde_json::from_str(&format!("\"{s}\"")).ok()?,
            None => KillScope::Process,
        };
        let taint = o
            .get(&Value::from("taint"))
            .and_then(|v| v.as_bool().ok().copied())
            .unwrap_or(false);
        Some(Decision {
            policy: Arc::clone(&self.name),
            rule: Arc::from(get("rule")?.as_ref()),
            action,
            kill_scope,
            taint,
            severity,
            message: get("message").map(|m| m.to_string()).unwrap_or_default(),
            mode: self.mode,
        })
    }
}

/// The event as Rego `input`: its JSON form, as a regorus value (uncached;
/// `PolicySet` caches container metadata across events).
pub fn input_for(ev: &Event) -> Result<Value, String> {
    super::rego_input::to_value(ev).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_errors_are_placed_1_based() {
        // Found by fuzzing (fuzz/fuzz_targets/rego.rs): regorus places this
        // error at column 0 of the next line.
        let file = Path::new("/p/x.rego");
        let src = "# kinds: exec\npackage agentguard\n\nx := input.\nfoo\n";
        let errs = RegoPolicy::load(file, src).expect_err("a syntax error");
        assert_eq!(errs.len(), 1);
        let d = &errs[0];
        assert_eq!((d.line, d.column), (5, 1), "{d}");
        assert!(d.message.contains("whitespace"), "{d}");
    }

    #[test]
    fn a_policy_only_the_interpreter_could_run_is_refused_at_load() {
        // `with` (the VM compiler refuses it) around a recursive function:
        // the interpreter would recurse on the stack until the daemon died.
        let src = "# kinds: exec\npackage agentguard\n\nimport rego.v1\n\n\
                   f(x) := y if {\n\ty := f(x)\n}\n\n\
                   decisions contains d if {\n\tf(1) with input as {}\n\t\
                   d := {\"rule\": \"r\", \"action\": \"alert\", \"severity\": \"low\", \"message\": \"m\"}\n}\n";
        let errs = RegoPolicy::load(Path::new("/p/with.rego"), src).expect_err("refused");
        assert_eq!(errs.len(), 1);
        let d = &errs[0];
        assert_eq!(d.line, 2, "{d}");
        assert!(d.message.contains("bytecode VM"), "{d}");
    }

    #[test]
    fn a_recursive_function_is_an_evaluation_error_not_a_stack_overflow() {
        // Found by fuzzing (fuzz/fuzz_targets/rego.rs): the VM ran a
        // function calling itself on the thread's stack until it
        // overflowed, which aborts the process.
        let src = "# kinds: exec\npackage agentguard\n\nimport rego.v1\n\n\
                   base(path) := name if {\n\tname := base(path)\n}\n\n\
                   decisions contains d if {\n\tbase(input.exec.file.path)\n\t\
                   d := {\"rule\": \"r\", \"action\": \"alert\", \"severity\": \"low\", \"message\": \"m\"}\n}\n";
        let p = RegoPolicy::load(Path::new("/p/rec.rego"), src).expect("loads");
        let input =
            Value::from_json_str(r#"{"exec": {"file": {"path": "/bin/sh"}}}"#).expect("input");
        let mut out = Vec::new();
        for _ in 0..2 {
            let e = p.evaluate(&input, &mut out).expect_err("no end");
            assert!(e.contains("limit"), "{e}");
        }
        assert!(out.is_empty());
        // And the pack's policy still decides through the same VM mode.
        let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/privilege.rego");
        let src = std::fs::read_to_string(&pack).expect("privilege.rego");
        let p = RegoPolicy::load(&pack, &src).expect("loads");
        let input = Value::from_json_str(
            r#"{"ret": 0, "comm": "sh", "identity": {"agent": {"name": "claude"}},
                "exec": {"file": {"path": "/usr/bin/sudo"}, "argv": ["sudo", "-i"]}}"#,
        )
        .expect("input");
        assert_eq!(p.evaluate(&input, &mut out), Ok(0));
        assert_eq!(out.len(), 1);
        assert_eq!(&*out[0].rule, "privilege-tool");
    }

    #[test]
    fn nesting_too_deep_for_the_parser_is_refused_at_once() {
        // Found by fuzzing (fuzz/fuzz_targets/rego.rs): 100 nested `{`
        // kept regorus's parser busy for hours (each level doubles it).
        let file = Path::new("/p/deep.rego");
        let deep = |open: &str, n: usize| {
            format!(
                "# kinds: exec\npackage agentguard\nx if {{\n\ty := {}1\n}}\n",
                open.repeat(n)
            )
        };
        let started = std::time::Instant::now();
        for open in ["{", "[", "{["] {
            let errs = RegoPolicy::load(file, &deep(open, 100)).expect_err("too deep");
            assert_eq!(errs.len(), 1);
            assert!(
                errs[0].message.contains("nested more than 16"),
                "{}",
                errs[0]
            );
            // Line 4, where the 17th level opens (the rule's `{` is the first).
            assert_eq!((errs[0].line, errs[0].column), (4, 6 + 16), "{}", errs[0]);
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Brackets in strings, raw strings and comments don't count.
        let b = "[".repeat(40);
        let src = format!(
            "# kinds: exec\n# {b}\npackage agentguard\nimport rego.v1\nx := \"{b}\\\"{b}\"\ny := `{b}` # {b}\ndecisions := []\n"
        );
        assert!(too_deep(&src).is_none());
        assert!(RegoPolicy::load(file, &src).is_ok());
        // As deep as allowed, with the rule's braces.
        let ok = format!(
            "# kinds: exec\npackage agentguard\nx if {{\n\ty := {}1{}\n}}\n",
            "[".repeat(MAX_NESTING - 1),
            "]".repeat(MAX_NESTING - 1)
        );
        assert!(too_deep(&ok).is_none());
        assert!(too_deep(&ok.replacen('1', "[1]", 1)).is_some());
    }
}
