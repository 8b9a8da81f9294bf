//! Input templates: `${workflow.input.path}` and `${task.output.path}`.
//!
//! A string that is exactly one template becomes the referenced JSON value
//! (any type); a template inside a longer string is replaced by the value's
//! text (strings as they are, anything else as compact JSON). Path segments
//! are object keys, or array indexes when numeric. A path that does not
//! exist at dispatch time fails the task: a silent `null` would hide the
//! producer's mistake until much later.

use serde_json::Value;

/// Where a template reads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `${workflow.input...}`
    WorkflowInput,
    /// `${task_id.output...}`
    TaskOutput(String),
    /// `${item...}`: in a mapped task's input, the element of the array
    /// its instance runs for.
    Item,
    /// `${index}`: in a mapped task's input, the instance's position.
    Index,
}

/// One `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub source: Source,
    pub path: Vec<String>,
}

impl Ref {
    /// The reference as written between `${` and `}`.
    pub fn text(&self) -> String {
        let head = match &self.source {
            Source::WorkflowInput => "workflow.input".to_owned(),
            Source::TaskOutput(t) => format!("{t}.output"),
            Source::Item => "item".to_owned(),
            Source::Index => "index".to_owned(),
        };
        std::iter::once(head)
            .chain(self.path.iter().cloned())
            .collect::<Vec<_>>()
            .join(".")
    }
}

/// Parses the body of `${...}` (without the braces).
pub(crate) fn parse_ref(body: &str) -> Result<Ref, String> {
    let mut parts = body.split('.');
    let head = parts.next().unwrap_or_default();
    let field = parts.next();
    let path: Vec<String> = parts.map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("template `${{{body}}}` has an empty path segment"));
    }
    match (head, field) {
        ("item", field) => Ok(Ref {
            source: Source::Item,
            path: field.map(str::to_owned).into_iter().chain(path).collect(),
        }),
        ("index", None) => Ok(Ref {
            source: Source::Index,
            path,
        }),
        ("index", Some(_)) => Err(format!("template `${{{body}}}`: `index` has no fields")),
        ("workflow", Some("input")) => Ok(Ref {
            source: Source::WorkflowInput,
            path,
        }),
        ("workflow", _) => Err(format!(
            "template `${{{body}}}`: only `workflow.input` can be referenced"
        )),
        ("", _) => Err(format!("template `${{{body}}}` names no task")),
        (task, Some("output")) => Ok(Ref {
            source: Source::TaskOutput(task.to_owned()),
            path,
        }),
        (_, _) => Err(format!(
            "template `${{{body}}}` must have the form `${{task.output.path}}` or `${{workflow.input.path}}`"
        )),
    }
}

/// A string split into literal text and references.
enum Piece<'a> {
    Text(&'a str),
    Ref(Ref),
}

fn split(s: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated template in `{s}`"))?;
        let body = &after[..end];
        pieces.push(Piece::Ref(parse_ref(body)?));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest));
    }
    Ok(pieces)
}

/// The one reference a string that is exactly `${...}` holds (a `map`).
pub fn single_ref(s: &str) -> Result<Ref, String> {
    match split(s)?.as_slice() {
        [Piece::Ref(r)] => Ok(r.clone()),
        _ => Err(format!(
            "`{s}` must be exactly one template, such as `${{list.output.items}}`"
        )),
    }
}

/// Collects every reference in `value`; the first malformed template is an
/// error.
pub fn references(value: &Value, out: &mut Vec<Ref>) -> Result<(), String> {
    match value {
        Value::String(s) if s.contains("${") => {
            for piece in split(s)? {
                if let Piece::Ref(r) = piece {
                    out.push(r);
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(|v| references(v, out)),
        Value::Object(map) => map.values().try_for_each(|v| references(v, out)),
        _ => Ok(()),
    }
}

/// True when `value` holds at least one `${`.
pub fn has_templates(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("${"),
        Value::Array(items) => items.iter().any(has_templates),
        Value::Object(map) => map.values().any(has_templates),
        _ => false,
    }
}

/// Why an input could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// A template is malformed or names what does not exist.
    Template(String),
    /// The resolved input would be larger than the limit: at least
    /// `bytes` bytes of JSON. Expansion stopped there.
    TooLarge { bytes: usize },
}

/// Substitutes every template in `value`. `lookup` gives the workflow input
/// or a task's output. The values substituted may add at most `max_bytes`
/// bytes of JSON: past that, expansion stops with
/// [`ResolveError::TooLarge`] before anything larger is built (one output
/// referenced 200 times is measured, not copied 200 times).
pub fn resolve<'a>(
    value: &Value,
    lookup: &dyn Fn(&Source) -> Option<&'a Value>,
    max_bytes: usize,
) -> Result<Value, ResolveError> {
    let mut budget = Budget {
        left: max_bytes,
        used: 0,
    };
    resolve_within(value, lookup, &mut budget)
}

/// Bytes of JSON substituted so far, and how many more may be.
struct Budget {
    left: usize,
    used: usize,
}

impl Budget {
    /// Takes `v`'s JSON size from the budget; too large when it does not
    /// fit.
    fn take(&mut self, v: &Value) -> Result<(), ResolveError> {
        match json_len_within(v, self.left) {
            Some(n) => {
                self.left -= n;
                self.used += n;
                Ok(())
            }
            None => Err(ResolveError::TooLarge {
                bytes: self.used + self.left + 1,
            }),
        }
    }
}

fn resolve_within<'a>(
    value: &Value,
    lookup: &dyn Fn(&Source) -> Option<&'a Value>,
    budget: &mut Budget,
) -> Result<Value, ResolveError> {
    match value {
        Value::String(s) if s.contains("${") => {
            let pieces = split(s).map_err(ResolveError::Template)?;
            if let [Piece::Ref(r)] = pieces.as_slice() {
                let v = fetch(r, lookup).map_err(ResolveError::Template)?;
                budget.take(v)?;
                return Ok(v.clone());
            }
            let mut text = String::with_capacity(s.len());
            for piece in &pieces {
                match piece {
                    Piece::Text(t) => text.push_str(t),
                    Piece::Ref(r) => {
                        let v = fetch(r, lookup).map_err(ResolveError::Template)?;
                        budget.take(v)?;
                        match v {
                            Value::String(v) => text.push_str(v),
                            other => text.push_str(&other.to_string()),
                        }
                    }
                }
            }
            Ok(Value::String(text))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| resolve_within(v, lookup, budget))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve_within(v, lookup, budget)?)))
            .collect::<Result<_, ResolveError>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// The size of `v` as compact JSON, if it is at most `max` bytes; `None`
/// (found after writing at most `max + 1` bytes' worth) when larger.
pub fn json_len_within<T: serde::Serialize + ?Sized>(v: &T, max: usize) -> Option<usize> {
    struct Count {
        n: usize,
        max: usize,
    }
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.n += buf.len();
            if self.n > self.max {
                return Err(std::io::Error::other("over the limit"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count { n: 0, max };
    serde_json::to_writer(&mut count, v).ok()?;
    Some(count.n)
}

/// The value a reference names, or why there is none.
pub(crate) fn fetch<'a>(
    r: &Ref,
    lookup: &dyn Fn(&Source) -> Option<&'a Value>,
) -> Result<&'a Value, String> {
    let what = match &r.source {
        Source::WorkflowInput => "workflow input".to_owned(),
        Source::TaskOutput(t) => format!("output of task `{t}`"),
        Source::Item => "item".to_owned(),
        Source::Index => "index".to_owned(),
    };
    let mut current = lookup(&r.source).ok_or_else(|| format!("no {what} is available"))?;
    for (i, seg) in r.path.iter().enumerate() {
        let next = match current {
            Value::Object(map) => map.get(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        current = next.ok_or_else(|| {
            format!(
                "the {what} has no `{}` (template path `{}`)",
                r.path[..=i].join("."),
                r.path.join(".")
            )
        })?;
    }
    Ok(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: Value, expected: Result<Value, &str>) {
        let wf = json!({"order": {"customerId": 123, "items": ["a", "b"]}});
        let out = json!({"orderId": "o-7", "total": 12.5, "nested": {"n": null}});
        let lookup = |s: &Source| -> Option<&Value> {
            match s {
                Source::WorkflowInput => Some(&wf),
                Source::TaskOutput(t) if t == "create" => Some(&out),
                Source::TaskOutput(_) | Source::Item | Source::Index => None,
            }
        };
        let got = resolve(&input, &lookup, usize::MAX / 2);
        match expected {
            Ok(v) => assert_eq!(got.unwrap(), v, "input {input}"),
            Err(fragment) => {
                let Err(ResolveError::Template(e)) = got else {
                    panic!("input {input}: expected a template error, got {got:?}");
                };
                assert!(
                    e.contains(fragment),
                    "input {input}: error `{e}` lacks `{fragment}`"
                );
            }
        }
    }

    #[test]
    fn resolves_values_and_text() {
        check(
            json!("${workflow.input.order}"),
            Ok(json!({"customerId": 123, "items": ["a", "b"]})),
        );
        check(
            json!("${workflow.input}"),
            Ok(json!({"order": {"customerId": 123, "items": ["a", "b"]}})),
        );
        check(json!("${workflow.input.order.items.1}"), Ok(json!("b")));
        check(
            json!({"id": "${create.output.orderId}", "n": 5}),
            Ok(json!({"id": "o-7", "n": 5})),
        );
        check(
            json!(["x", "${create.output.total}"]),
            Ok(json!(["x", 12.5])),
        );
        check(json!("${create.output.nested.n}"), Ok(json!(null)));
        check(
            json!("order ${create.output.orderId} costs ${create.output.total}"),
            Ok(json!("order o-7 costs 12.5")),
        );
        check(json!("no templates"), Ok(json!("no templates")));
        check(json!(42), Ok(json!(42)));
    }

    #[test]
    fn reports_missing_paths_and_bad_syntax() {
        check(json!("${create.output.missing}"), Err("has no `missing`"));
        check(
            json!("${workflow.input.order.items.9}"),
            Err("has no `order.items.9`"),
        );
        check(json!("${other.output}"), Err("no output of task `other`"));
        check(json!("${create.output"), Err("unterminated"));
        check(json!("${create.input.x}"), Err("must have the form"));
        check(json!("${workflow.output}"), Err("only `workflow.input`"));
        check(json!("${create.output..x}"), Err("empty path segment"));
    }

    #[test]
    fn stops_expanding_at_the_limit() {
        let big = json!({"blob": "x".repeat(1000)});
        let lookup = |s: &Source| -> Option<&Value> {
            match s {
                Source::WorkflowInput => Some(&big),
                _ => None,
            }
        };
        // 200 references of ~1 KB each: 200 KB resolved, over a 10 KB
        // limit after about ten of them.
        let input = Value::Array(vec![json!("${workflow.input}"); 200]);
        match resolve(&input, &lookup, 10_000) {
            Err(ResolveError::TooLarge { bytes }) => assert!(bytes > 10_000, "{bytes}"),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // The same in a longer string, and one reference that fits.
        let text = json!(format!(
            "a ${{workflow.input.blob}} b ${{workflow.input.blob}}"
        ));
        assert!(matches!(
            resolve(&text, &lookup, 1500),
            Err(ResolveError::TooLarge { .. })
        ));
        assert_eq!(
            resolve(&json!("${workflow.input.blob}"), &lookup, 1002).unwrap(),
            json!("x".repeat(1000))
        );
        assert_eq!(json_len_within(&json!("x".repeat(1000)), 1002), Some(1002));
        assert_eq!(json_len_within(&json!("x".repeat(1000)), 1001), None);
    }

    #[test]
    fn collects_references() {
        let mut refs = Vec::new();
        references(
            &json!({"a": "${x.output.id}", "b": ["${workflow.input.k}", "t ${y.output}"]}),
            &mut refs,
        )
        .unwrap();
        assert_eq!(
            refs,
            vec![
                Ref {
                    source: Source::TaskOutput("x".into()),
                    path: vec!["id".into()]
                },
                Ref {
                    source: Source::WorkflowInput,
                    path: vec!["k".into()]
                },
                Ref {
                    source: Source::TaskOutput("y".into()),
                    path: vec![]
                },
            ]
        );
        assert!(has_templates(&json!({"a": [1, "${x.output}"]})));
        assert!(!has_templates(&json!({"a": [1, "$x"]})));
    }
}
