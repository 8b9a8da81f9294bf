//! Conditions: a task's `when`, a small expression over templates that
//! decides, when the task's dependencies are met, whether it runs or ends
//! `skipped`. Parsed and type-checked at submit ([`Condition::parse`]),
//! evaluated over the outputs ([`Condition::eval`]); nothing is executed.
//!
//! Grammar (whitespace between tokens is free):
//!
//! ```text
//! expr       = or
//! or         = and { "||" and }
//! and        = not { "&&" not }
//! not        = "!" not | comparison
//! comparison = operand [ ("==" | "!=" | "<" | "<=" | ">" | ">=") operand ]
//! operand    = "(" expr ")" | template | literal
//! template   = "${" task ".output" { "." key } "}" | "${workflow.input" { "." key } "}"
//! literal    = JSON number | JSON string | true | false | null
//! ```
//!
//! Types: a comparison is a boolean; `!`, `&&` and `||` take booleans: a
//! comparison, `true` or `false`, a parenthesised boolean, or a template
//! (whose value must then be a JSON boolean when evaluated). The whole
//! condition must be a boolean. `==` and `!=` compare any JSON values
//! (numbers by value: `1 == 1.0`); `<`, `<=`, `>` and `>=` compare two
//! numbers or two strings (by code point). Comparing literals of types
//! that can never be ordered (`1 < "a"`) is refused at submit; a value of
//! the wrong type at evaluation fails the task with the reason.
//! `&&` and `||` short-circuit.
//!
//! Bounds: at most [`MAX_CONDITION_LEN`] bytes, and [`MAX_DEPTH`]
//! operators (`!`, `&&`, `||`) and levels of parentheses together.

use crate::template::{self, Ref, Source};
use serde_json::Value;

/// Longest `when` accepted (bytes).
pub const MAX_CONDITION_LEN: usize = 4096;
/// Most operators (`!`, `&&`, `||`) and levels of parentheses in one
/// condition: what bounds the depth of its tree, so that evaluating it
/// never recurses deeper.
pub const MAX_DEPTH: usize = 32;

/// A parsed, type-checked condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    root: Expr,
}

#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Literal(Value),
    Ref(Ref),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(Op, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "==",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(Value),
    Ref(Ref),
    Op(Op),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn tokens(s: &str) -> Result<Vec<Token>, String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let two = b.get(i..i + 2);
        let (token, len) = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'(' => (Token::Open, 1),
            b')' => (Token::Close, 1),
            _ if two == Some(b"&&") => (Token::And, 2),
            _ if two == Some(b"||") => (Token::Or, 2),
            _ if two == Some(b"==") => (Token::Op(Op::Eq), 2),
            _ if two == Some(b"!=") => (Token::Op(Op::Ne), 2),
            _ if two == Some(b"<=") => (Token::Op(Op::Le), 2),
            _ if two == Some(b">=") => (Token::Op(Op::Ge), 2),
            b'<' => (Token::Op(Op::Lt), 1),
            b'>' => (Token::Op(Op::Gt), 1),
            b'!' => (Token::Not, 1),
            _ if two == Some(b"${") => {
                let end = s[i..]
                    .find('}')
                    .ok_or_else(|| format!("unterminated template at byte {i}"))?;
                let r = template::parse_ref(&s[i + 2..i + end])?;
                (Token::Ref(r), end + 1)
            }
            b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n' => {
                let len = literal_len(&b[i..]);
                match serde_json::from_str::<Value>(&s[i..i + len]) {
                    Ok(v) => (Token::Literal(v), len),
                    Err(_) => return Err(format!("no valid literal at byte {i}")),
                }
            }
            _ => {
                return Err(format!(
                    "unexpected `{}` at byte {i}",
                    s[i..].chars().next().unwrap_or(' ')
                ));
            }
        };
        out.push(token);
        i += len;
    }
    Ok(out)
}

/// The length of the literal at the start of `b`: a JSON string up to its
/// closing quote, else a run of the characters numbers and words are made
/// of (serde_json then says whether it is a literal).
fn literal_len(b: &[u8]) -> usize {
    if b[0] == b'"' {
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return i + 1,
                _ => i += 1,
            }
        }
        return b.len();
    }
    b.iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')))
        .unwrap_or(b.len())
}

/// What an expression yields, as far as submit can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bool,
    Number,
    Str,
    Null,
    /// A template: known only when evaluated.
    Any,
}

fn kind(e: &Expr) -> Kind {
    match e {
        Expr::Literal(Value::Bool(_)) => Kind::Bool,
        Expr::Literal(Value::Number(_)) => Kind::Number,
        Expr::Literal(Value::String(_)) => Kind::Str,
        Expr::Literal(_) => Kind::Null,
        Expr::Ref(_) => Kind::Any,
        Expr::Not(_) | Expr::And(..) | Expr::Or(..) | Expr::Cmp(..) => Kind::Bool,
    }
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }

    fn boolean(e: Expr, what: &str) -> Result<Expr, String> {
        match kind(&e) {
            Kind::Bool | Kind::Any => Ok(e),
            _ => Err(format!(
                "{what} takes booleans (a comparison, true, false or a template)"
            )),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Token::Or) {
            self.at += 1;
            self.deeper()?;
            let right = self.and()?;
            left = Expr::Or(
                Box::new(Self::boolean(left, "`||`")?),
                Box::new(Self::boolean(right, "`||`")?),
            );
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.peek() == Some(&Token::And) {
            self.at += 1;
            self.deeper()?;
            let right = self.not()?;
            left = Expr::And(
                Box::new(Self::boolean(left, "`&&`")?),
                Box::new(Self::boolean(right, "`&&`")?),
            );
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Token::Not) {
            self.at += 1;
            self.deeper()?;
            let inner = self.not()?;
            return Ok(Expr::Not(Box::new(Self::boolean(inner, "`!`")?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        let Some(Token::Op(op)) = self.peek().cloned() else {
            return Ok(left);
        };
        self.at += 1;
        let right = self.operand()?;
        let (a, b) = (kind(&left), kind(&right));
        let ordered = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
        if ordered {
            for k in [a, b] {
                if !matches!(k, Kind::Number | Kind::Str | Kind::Any) {
                    return Err(format!("`{}` compares numbers or strings", op.text()));
                }
            }
            if a != Kind::Any && b != Kind::Any && a != b {
                return Err(format!(
                    "`{}` between a number and a string is never true",
                    op.text()
                ));
            }
        }
        if let Some(Token::Op(_)) = self.peek() {
            return Err("comparisons do not chain: use `&&`".into());
        }
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn operand(&mut self) -> Result<Expr, String> {
        let token = self.peek().cloned().ok_or("the expression ends too soon")?;
        self.at += 1;
        match token {
            Token::Literal(v) => Ok(Expr::Literal(v)),
            Token::Ref(r) => Ok(Expr::Ref(r)),
            Token::Open => {
                self.deeper()?;
                let inner = self.or()?;
                if self.peek() != Some(&Token::Close) {
                    return Err("a `(` is not closed".into());
                }
                self.at += 1;
                self.depth -= 1;
                Ok(inner)
            }
            other => Err(format!("expected a value, found {}", describe(&other))),
        }
    }
}

fn describe(t: &Token) -> &'static str {
    match t {
        Token::And => "`&&`",
        Token::Or => "`||`",
        Token::Not => "`!`",
        Token::Close => "`)`",
        Token::Open => "`(`",
        Token::Op(_) => "a comparison operator",
        Token::Literal(_) | Token::Ref(_) => "a value",
    }
}

/// Why a condition could not be evaluated: a template names a path that is
/// not there, or a value of the wrong type.
pub type EvalError = String;

impl Condition {
    /// Parses and type-checks `s` (see the module docs); the error says
    /// what is wrong.
    pub fn parse(s: &str) -> Result<Condition, String> {
        if s.len() > MAX_CONDITION_LEN {
            return Err(format!(
                "is {} bytes; the limit is {MAX_CONDITION_LEN}",
                s.len()
            ));
        }
        let mut p = Parser {
            tokens: tokens(s)?,
            at: 0,
            depth: 0,
        };
        if p.tokens.is_empty() {
            return Err("is empty".into());
        }
        let root = p.or()?;
        if let Some(t) = p.peek() {
            return Err(format!("unexpected {} after the expression", describe(t)));
        }
        let root = Parser::boolean(root, "a condition")
            .map_err(|_| "is not a boolean (compare it, e.g. `${a.output.n} > 0`)".to_owned())?;
        Ok(Condition { root })
    }

    /// Every template the condition reads.
    pub fn references(&self) -> Vec<&Ref> {
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a Ref>) {
            match e {
                Expr::Ref(r) => out.push(r),
                Expr::Literal(_) => {}
                Expr::Not(a) => walk(a, out),
                Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Evaluates the condition; `lookup` gives the workflow input or a
    /// task's output.
    pub fn eval<'a>(
        &self,
        lookup: &dyn Fn(&Source) -> Option<&'a Value>,
    ) -> Result<bool, EvalError> {
        truth(&self.root, lookup)
    }
}

fn value<'a, 'b>(
    e: &'b Expr,
    lookup: &dyn Fn(&Source) -> Option<&'a Value>,
) -> Result<std::borrow::Cow<'b, Value>, EvalError>
where
    'a: 'b,
{
    use std::borrow::Cow;
    Ok(match e {
        Expr::Literal(v) => Cow::Borrowed(v),
        Expr::Ref(r) => Cow::Borrowed(template::fetch(r, lookup)?),
        other => Cow::Owned(Value::Bool(truth(other, lookup)?)),
    })
}

fn truth<'a>(e: &Expr, lookup: &dyn Fn(&Source) -> Option<&'a Value>) -> Result<bool, EvalError> {
    match e {
        Expr::Literal(Value::Bool(b)) => Ok(*b),
        Expr::Ref(r) => match template::fetch(r, lookup)? {
            Value::Bool(b) => Ok(*b),
            other => Err(format!(
                "`{}` is {}, not a boolean",
                r.text(),
                json_type(other)
            )),
        },
        Expr::Literal(_) => Err("a literal that is not a boolean".into()),
        Expr::Not(a) => Ok(!truth(a, lookup)?),
        Expr::And(a, b) => Ok(truth(a, lookup)? && truth(b, lookup)?),
        Expr::Or(a, b) => Ok(truth(a, lookup)? || truth(b, lookup)?),
        Expr::Cmp(op, a, b) => {
            let (x, y) = (value(a, lookup)?, value(b, lookup)?);
            compare(*op, &x, &y)
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn compare(op: Op, x: &Value, y: &Value) -> Result<bool, EvalError> {
    use std::cmp::Ordering;
    let order = match (x, y) {
        (Value::Number(a), Value::Number(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
        (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
        _ => None,
    };
    match op {
        Op::Eq => Ok(order.map_or(x == y, |o| o == Ordering::Equal)),
        Op::Ne => Ok(order.map_or(x != y, |o| o != Ordering::Equal)),
        _ => {
            let o = order.ok_or_else(|| {
                format!(
                    "`{}` compares numbers or strings, not {} and {}",
                    op.text(),
                    json_type(x),
                    json_type(y)
                )
            })?;
            Ok(match op {
                Op::Lt => o == Ordering::Less,
                Op::Le => o != Ordering::Greater,
                Op::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(cond: &str, outputs: &Value) -> Result<bool, String> {
        let c = Condition::parse(cond)?;
        c.eval(&|s: &Source| match s {
            Source::WorkflowInput => outputs.get("input"),
            Source::TaskOutput(t) => outputs.get(t.as_str()),
            Source::Item | Source::Index => None,
        })
    }

    #[test]
    fn conditions_evaluate_as_documented() {
        let outs = json!({
            "input": {"limit": 1000},
            "check": {"approved": true, "amount": 250, "who": "ann", "n": 1.0, "none": null}
        });
        for (cond, want) in [
            (
                "${check.output.approved} == true && ${check.output.amount} < 1000",
                true,
            ),
            ("${check.output.approved}", true),
            ("!${check.output.approved}", false),
            ("${check.output.amount} >= ${workflow.input.limit}", false),
            ("${check.output.amount} < ${workflow.input.limit}", true),
            ("${check.output.who} == \"ann\"", true),
            ("${check.output.who} < \"bob\"", true),
            ("${check.output.n} == 1", true),
            ("${check.output.none} == null", true),
            ("${check.output.none} != null || false", false),
            ("(1 < 2) && !(2 <= 1)", true),
            ("false || (true && (\"a\" != \"b\"))", true),
            ("${check.output.amount} > -1e3", true),
            (
                "${check.output} == {\"x\":1}"
                    .replace("{\"x\":1}", "null")
                    .as_str(),
                false,
            ),
        ] {
            assert_eq!(run(cond, &outs), Ok(want), "{cond}");
        }
    }

    #[test]
    fn mistakes_are_refused_at_submit() {
        for cond in [
            "",
            "1",
            "\"yes\"",
            "${a.output.x} &&",
            "${a.output.x} == 1 == 2",
            "1 < \"a\"",
            "null < 1",
            "(${a.output.x}",
            "${a.output.x})",
            "${a.output.x} = 1",
            "1 && true",
            "!\"x\"",
            "${a.input.x} == 1",
            "${a.output.x",
            "${a.output.x} == [1]",
            "${a.output.x} == 1 ; rm -rf /",
        ] {
            assert!(Condition::parse(cond).is_err(), "accepted `{cond}`");
        }
        let deep = format!("{}true{}", "(".repeat(40), ")".repeat(40));
        assert!(Condition::parse(&deep).unwrap_err().contains("nested"));
        let long = format!("true{}", " ".repeat(MAX_CONDITION_LEN));
        assert!(Condition::parse(&long).unwrap_err().contains("limit"));
    }

    #[test]
    fn wrong_types_and_missing_paths_fail_when_evaluated() {
        let outs = json!({"a": {"n": 1, "s": "x", "flag": "yes"}});
        assert!(
            run("${a.output.n} < ${a.output.s}", &outs)
                .unwrap_err()
                .contains("compares")
        );
        assert!(
            run("${a.output.flag}", &outs)
                .unwrap_err()
                .contains("not a boolean")
        );
        assert!(run("${a.output.missing} == 1", &outs).is_err());
        // Short-circuit: the right side is not evaluated.
        assert_eq!(run("false && ${a.output.flag}", &outs), Ok(false));
        let c = Condition::parse("${a.output.n} == 1 && ${b.output.x}").unwrap();
        let names: Vec<_> = c.references().iter().map(|r| r.text()).collect();
        assert_eq!(names, ["a.output.n", "b.output.x"]);
    }
}
