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
}

/// One `${...}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub source: Source,
    pub path: Vec<String>,
}

/// Parses the body of `${...}` (without the braces).
fn parse_ref(body: &str) -> Result<Ref, String> {
    let mut parts = body.split('.');
    let head = parts.next().unwrap_or_default();
    let field = parts.next();
    let path: Vec<String> = parts.map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("template `${{{body}}}` has an empty path segment"));
    }
    match (head, field) {
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

/// Substitutes every template in `value`. `lookup` gives the workflow input
/// or a task's output.
pub fn resolve<'a>(
    value: &Value,
    lookup: &dyn Fn(&Source) -> Option<&'a Value>,
) -> Result<Value, String> {
    match value {
        Value::String(s) if s.contains("${") => {
            let pieces = split(s)?;
            if let [Piece::Ref(r)] = pieces.as_slice() {
                return fetch(r, lookup).cloned();
            }
            let mut text = String::with_capacity(s.len());
            for piece in &pieces {
                match piece {
                    Piece::Text(t) => text.push_str(t),
                    Piece::Ref(r) => match fetch(r, lookup)? {
                        Value::String(v) => text.push_str(v),
                        other => text.push_str(&other.to_string()),
                    },
                }
            }
            Ok(Value::String(text))
        }
        Value::Array(items) => items
            .iter()
            .map(|v| resolve(v, lookup))
            .collect::<Result<_, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve(v, lookup)?)))
            .collect::<Result<_, String>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

fn fetch<'a>(r: &Ref, lookup: &dyn Fn(&Source) -> Option<&'a Value>) -> Result<&'a Value, String> {
    let what = match &r.source {
        Source::WorkflowInput => "workflow input".to_owned(),
        Source::TaskOutput(t) => format!("output of task `{t}`"),
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
                Source::TaskOutput(_) => None,
            }
        };
        let got = resolve(&input, &lookup);
        match expected {
            Ok(v) => assert_eq!(got.unwrap(), v, "input {input}"),
            Err(fragment) => {
                let e = got.unwrap_err();
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
