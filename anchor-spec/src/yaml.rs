//! A small YAML document tree that keeps the source position of every key and value.
//!
//! Built from `saphyr-parser`'s event stream (see `docs/decisions.md`): the tree keeps
//! each scalar's style (so a quoted `"5"` stays a string while a plain `5` is a number,
//! YAML 1.2 core schema), each mapping's keys in order (duplicates are reported, not
//! dropped) and a line/column for everything the validator may point at.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as YamlSpan};

/// A position in the source: 1-based line and column (columns count characters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
}

/// Where a node sits in the source: its start and (exclusive) end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// The first character.
    pub start: Pos,
    /// Just after the last character.
    pub end: Pos,
}

impl Span {
    fn from_yaml(span: YamlSpan) -> Span {
        Span {
            start: Pos {
                line: span.start.line(),
                column: span.start.col() + 1,
            },
            end: Pos {
                line: span.end.line(),
                column: span.end.col() + 1,
            },
        }
    }

    /// How many characters to underline on the start line (at least one).
    pub fn width(&self) -> usize {
        if self.end.line == self.start.line && self.end.column > self.start.column {
            self.end.column - self.start.column
        } else {
            1
        }
    }
}

/// A scalar's value under the YAML 1.2 core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    /// `~`, `null` or an empty value.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer that fits in i64.
    Int(i64),
    /// A floating-point number.
    Float(f64),
    /// Any other text, or any quoted or block scalar.
    Str(String),
}

impl Scalar {
    /// How the value reads in a message ("a number", "a string", ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Scalar::Null => "empty (null)",
            Scalar::Bool(_) => "a boolean",
            Scalar::Int(_) => "an integer",
            Scalar::Float(_) => "a number",
            Scalar::Str(_) => "a string",
        }
    }
}

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Where it is.
    pub span: Span,
}

/// The shapes a node can have.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// A scalar; `text` is the source text after unquoting, `quoted` tells whether the scalar
    /// was quoted (so the value starts one column after `span.start`).
    Scalar {
        /// The typed value.
        value: Scalar,
        /// The scalar's text.
        text: String,
        /// The style it was written in.
        style: ScalarStyle,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in source order (duplicates kept).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// What kind of value this is, for messages ("a mapping", "a list", "a string", ...).
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { value, .. } => value.kind_name(),
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// The mapping entries, when this is a mapping.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The scalar value, when this is a scalar.
    pub fn as_scalar(&self) -> Option<&Scalar> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The text of a string scalar (not numbers, booleans or null).
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar {
                value: Scalar::Str(s),
                ..
            } => Some(s),
            _ => None,
        }
    }

    /// The source text of any scalar (a mapping key such as `1` still has text).
    pub fn scalar_text(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The column where the scalar's text begins: one past an opening quote.
    pub fn text_start(&self) -> Pos {
        match &self.kind {
            NodeKind::Scalar {
                style: ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted,
                ..
            } => Pos {
                line: self.span.start.line,
                column: self.span.start.column + 1,
            },
            _ => self.span.start,
        }
    }

    /// Whether `text_start` plus a character offset lands on the right character: true for
    /// single-line plain and quoted scalars without escapes.
    pub fn offsets_are_exact(&self) -> bool {
        match &self.kind {
            NodeKind::Scalar { style, text, .. } => {
                self.span.start.line == self.span.end.line
                    && match style {
                        ScalarStyle::Plain => true,
                        ScalarStyle::SingleQuoted => !text.contains('\''),
                        ScalarStyle::DoubleQuoted => {
                            let inner = self.span.end.column.saturating_sub(self.span.start.column);
                            inner == text.chars().count() + 2
                        }
                        _ => false,
                    }
            }
            _ => false,
        }
    }
}

/// A YAML syntax problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What the parser said.
    pub message: String,
    /// Where.
    pub pos: Pos,
    /// A likelier cause, when one is known (an unclosed bracket earlier in the file).
    pub note: Option<String>,
}

/// The deepest nesting accepted. A tasks.yaml needs a few levels; far deeper input is an
/// attack or an accident, and refusing it keeps every recursive walk off the stack limit.
const MAX_DEPTH: usize = 128;

/// The most nodes a document may expand to through aliases; more is treated as an attack
/// (a "billion laughs" document) rather than a task list.
const MAX_NODES: usize = 100_000;

/// Parses one YAML document into a tree. `Ok(None)` for a document-less (empty) input.
pub fn parse(text: &str) -> Result<Option<Node>, SyntaxError> {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    let mut documents = 0usize;
    let mut root: Option<Node> = None;
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|err| SyntaxError {
            message: err.info().to_string(),
            pos: Pos {
                line: err.marker().line(),
                column: err.marker().col() + 1,
            },
            note: builder.unclosed_bracket(text),
        })?;
        let span = Span::from_yaml(span);
        match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        message: "a second YAML document (`---`) is not allowed; put every task in the one `tasks:` list".into(),
                        pos: span.start,
                        note: None,
                    });
                }
            }
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::Alias(id) => {
                let node = builder.anchors.get(&id).cloned().ok_or(SyntaxError {
                    message: "this alias refers to an anchor that is not defined before it".into(),
                    pos: span.start,
                    note: None,
                })?;
                builder.count += count_nodes(&node);
                if builder.count > MAX_NODES {
                    return Err(SyntaxError {
                        message: format!(
                            "the document expands to more than {MAX_NODES} values through aliases"
                        ),
                        pos: span.start,
                        note: None,
                    });
                }
                if let Some(done) = builder.push(node, 0) {
                    root = Some(done);
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let text = value.into_owned();
                let forced_string = tag
                    .as_ref()
                    .is_some_and(|tag| tag.is_yaml_core_schema() && tag.suffix == "str");
                let value = if style == ScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    Scalar::Str(text.clone())
                };
                let node = Node {
                    kind: NodeKind::Scalar { value, text, style },
                    span,
                };
                builder.count += 1;
                if let Some(done) = builder.push(node, anchor) {
                    root = Some(done);
                }
            }
            Event::SequenceStart(anchor, _) => builder.open(Open::Seq(Vec::new()), span, anchor),
            Event::MappingStart(anchor, _) => {
                builder.open(Open::Map(Vec::new(), None), span, anchor)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(done) = builder.close(span) {
                    root = Some(done);
                }
            }
        }
        if builder.count > MAX_NODES {
            return Err(SyntaxError {
                message: format!("the document has more than {MAX_NODES} values"),
                pos: span.start,
                note: None,
            });
        }
        if builder.stack.len() > MAX_DEPTH {
            return Err(SyntaxError {
                message: format!("the document is nested more than {MAX_DEPTH} levels deep"),
                pos: span.start,
                note: None,
            });
        }
    }
    Ok(root)
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        NodeKind::Scalar { .. } => 1,
        NodeKind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        NodeKind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

enum Open {
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>, Option<Node>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<(Open, Span, usize)>,
    anchors: HashMap<usize, Node>,
    count: usize,
}

impl Builder {
    /// The innermost open `[` or `{` collection, described for a syntax error: an unclosed
    /// bracket is usually the real cause of an error reported further down.
    fn unclosed_bracket(&self, text: &str) -> Option<String> {
        let lines: Vec<&str> = text.lines().collect();
        self.stack.iter().rev().find_map(|(_, span, _)| {
            let line = lines.get(span.start.line.checked_sub(1)?)?;
            let c = line.chars().nth(span.start.column.checked_sub(1)?)?;
            matches!(c, '[' | '{').then(|| {
                format!(
                    "the `{c}` opened on line {} column {} is not closed; close it with `{}`",
                    span.start.line,
                    span.start.column,
                    if c == '[' { ']' } else { '}' }
                )
            })
        })
    }

    fn open(&mut self, open: Open, span: Span, anchor: usize) {
        self.count += 1;
        self.stack.push((open, span, anchor));
    }

    fn close(&mut self, end: Span) -> Option<Node> {
        let (open, mut span, anchor) = self.stack.pop()?;
        span.end = end.end;
        let kind = match open {
            Open::Seq(items) => NodeKind::Seq(items),
            // A key without a value cannot happen in a well-formed event stream; the parser
            // always emits a value (possibly an empty scalar) for each key.
            Open::Map(entries, _) => NodeKind::Map(entries),
        };
        self.push(Node { kind, span }, anchor)
    }

    /// Adds a finished node to the open collection; returns it when it is the document root.
    fn push(&mut self, node: Node, anchor: usize) -> Option<Node> {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => Some(node),
            Some((Open::Seq(items), _, _)) => {
                items.push(node);
                None
            }
            Some((Open::Map(entries, pending), _, _)) => {
                match pending.take() {
                    None => *pending = Some(node),
                    Some(key) => entries.push((key, node)),
                }
                None
            }
        }
    }
}

/// Resolves a plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Scalar {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY)
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let negative = text.starts_with('-');
    let radix = |digits: &str, radix: u32| {
        i64::from_str_radix(digits, radix)
            .ok()
            .map(|v| if negative { -v } else { v })
    };
    if let Some(hex) = text.strip_prefix("0x") {
        if let Some(v) = radix(hex, 16) {
            return Scalar::Int(v);
        }
    }
    if let Some(oct) = text.strip_prefix("0o") {
        if let Some(v) = radix(oct, 8) {
            return Scalar::Int(v);
        }
    }
    if !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<i64>() {
            Ok(v) => Scalar::Int(v),
            // Too large for i64: still a number, just not one we can hold exactly.
            Err(_) => text
                .parse::<f64>()
                .map_or_else(|_| Scalar::Str(text.to_string()), Scalar::Float),
        };
    }
    let looks_numeric = unsigned
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && unsigned
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && unsigned.bytes().any(|b| b.is_ascii_digit());
    if looks_numeric {
        if let Ok(v) = text.parse::<f64>() {
            return Scalar::Float(v);
        }
    }
    Scalar::Str(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_by_core_schema() {
        assert_eq!(resolve_plain("5"), Scalar::Int(5));
        assert_eq!(resolve_plain("-3"), Scalar::Int(-3));
        assert_eq!(resolve_plain("0x1f"), Scalar::Int(31));
        assert_eq!(resolve_plain("1.5"), Scalar::Float(1.5));
        assert_eq!(resolve_plain("1e3"), Scalar::Float(1000.0));
        assert_eq!(resolve_plain("true"), Scalar::Bool(true));
        assert_eq!(resolve_plain("~"), Scalar::Null);
        assert_eq!(resolve_plain("30m"), Scalar::Str("30m".into()));
        assert_eq!(
            resolve_plain("2024-01-01"),
            Scalar::Str("2024-01-01".into())
        );
    }

    #[test]
    fn positions_of_keys_and_values() {
        let doc = parse("tasks:\n  - name: \"Foo\"\n    timeout: 5m\n")
            .unwrap()
            .unwrap();
        let top = doc.as_map().unwrap();
        assert_eq!(top[0].0.span.start, Pos { line: 1, column: 1 });
        let NodeKind::Seq(tasks) = &top[0].1.kind else {
            panic!()
        };
        let task = tasks[0].as_map().unwrap();
        assert_eq!(task[0].0.span.start, Pos { line: 2, column: 5 });
        assert_eq!(
            task[0].1.span.start,
            Pos {
                line: 2,
                column: 11
            }
        );
        assert_eq!(
            task[0].1.text_start(),
            Pos {
                line: 2,
                column: 12
            }
        );
        assert!(task[0].1.offsets_are_exact());
        assert_eq!(
            task[1].1.span.start,
            Pos {
                line: 3,
                column: 14
            }
        );
        assert_eq!(task[1].1.span.width(), 2);
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("tasks:\n  - name: [a\n").unwrap_err();
        assert!(err.pos.line >= 2, "{err:?}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = "- ".repeat(100_000) + "x\n";
        let err = parse(&deep).unwrap_err();
        assert!(err.message.contains("nested more than"), "{err:?}");
        let flow = "[".repeat(1000);
        assert!(parse(&flow).is_err());
    }

    #[test]
    fn unclosed_brackets_are_named() {
        let err = parse("tasks:\n  - name: A\n    parameters: {type: object, properties: [userId\n  - name: B\n").unwrap_err();
        let note = err.note.expect("a note about the bracket");
        assert!(note.contains("line 3"), "{note}");
    }

    #[test]
    fn byte_order_mark_and_crlf() {
        let doc = parse("\u{feff}tasks:\r\n  - name: A\r\n").unwrap().unwrap();
        let top = doc.as_map().unwrap();
        assert_eq!(top[0].0.scalar_text(), Some("tasks"));
        let NodeKind::Seq(tasks) = &top[0].1.kind else {
            panic!()
        };
        assert_eq!(
            tasks[0].as_map().unwrap()[0].1.span.start,
            Pos {
                line: 2,
                column: 11
            }
        );
    }

    #[test]
    fn aliases_expand_and_are_bounded() {
        let doc = parse("a: &x [1, 2]\nb: *x\n").unwrap().unwrap();
        assert_eq!(doc.as_map().unwrap()[1].1.kind_name(), "a list");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let prev = format!("*a{}", i - 1);
            bomb.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
        }
        assert!(parse(&bomb).is_err());
    }
}
