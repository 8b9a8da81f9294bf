//! Messages of several results (`warren.results`): a JSON array of task
//! results, which a busy worker sends instead of one message per result
//! (docs/protocol.md, Task result). Each element is taken as if it had
//! come alone, so everything a result goes through (its partition's
//! forward, the token check, dead-lettering) is the same; only what makes
//! the array unusable as a whole dead-letters the message whole.

use serde_json::value::RawValue;
use warren_shared::wire::MAX_RESULTS_PER_MESSAGE;

/// True when `body` is an array: a message of several results. A single
/// result is an object; anything else is left to the single-result path
/// (and dead-lettered there as undecodable).
pub(super) fn is_batch(body: &[u8]) -> bool {
    body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[')
}

/// The bodies of the results in `body`, an array, each as it was written;
/// or why the message as a whole is dead-lettered: not a JSON array, no
/// results, or more than the protocol's [`MAX_RESULTS_PER_MESSAGE`].
pub(super) fn split(body: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let elements: Vec<&RawValue> =
        serde_json::from_slice(body).map_err(|e| format!("undecodable message of results: {e}"))?;
    match elements.len() {
        0 => Err("a message of results with none in it".into()),
        n if n > MAX_RESULTS_PER_MESSAGE => Err(format!(
            "a message of {n} results, over the protocol's {MAX_RESULTS_PER_MESSAGE}"
        )),
        _ => Ok(elements
            .into_iter()
            .map(|e| e.get().as_bytes().to_vec())
            .collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_is_a_batch_and_an_object_is_not() {
        assert!(is_batch(b"[]"));
        assert!(is_batch(b" \n\t[{}]"));
        assert!(!is_batch(b"{\"workflow_id\":\"w\"}"));
        assert!(!is_batch(b""));
        assert!(!is_batch(b"  "));
        assert!(!is_batch(b"\"[\""));
    }

    #[test]
    fn each_element_comes_out_as_it_was_written_even_an_invalid_one() {
        let body = br#"[{"a": 1}, 7, {"b": [1, 2]}]"#;
        let parts = split(body).unwrap();
        let parts: Vec<&str> = parts
            .iter()
            .map(|p| std::str::from_utf8(p).unwrap())
            .collect();
        // An element that is no result (7) is dead-lettered alone later.
        assert_eq!(parts, [r#"{"a": 1}"#, "7", r#"{"b": [1, 2]}"#]);
    }

    #[test]
    fn an_unusable_array_is_refused_whole_with_a_reason() {
        for (body, part) in [
            (&b"[{}, "[..], "undecodable"),
            (&b"[1] trailing"[..], "undecodable"),
            (&b"[]"[..], "none in it"),
        ] {
            let e = split(body).unwrap_err();
            assert!(e.contains(part), "{e}");
        }
        let over = format!("[{}]", vec!["{}"; MAX_RESULTS_PER_MESSAGE + 1].join(","));
        let e = split(over.as_bytes()).unwrap_err();
        assert!(e.contains("1001 results") && e.contains("1000"), "{e}");
        let at = format!("[{}]", vec!["{}"; MAX_RESULTS_PER_MESSAGE].join(","));
        assert_eq!(split(at.as_bytes()).unwrap().len(), MAX_RESULTS_PER_MESSAGE);
    }
}
