//! Reading a workflow request from a file: YAML for `.yaml` and `.yml`,
//! JSON otherwise, and an object either way.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::Path;

/// Reads a workflow request: YAML for `.yaml` and `.yml` files, else JSON.
pub fn read(file: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let yaml = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    );
    let v: Value = if yaml {
        serde_norway::from_str(&text)
            .with_context(|| format!("{} is not valid YAML", file.display()))?
    } else {
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not valid JSON", file.display()))?
    };
    if !v.is_object() {
        bail!(
            "{} must hold a JSON object (a workflow request)",
            file.display()
        );
    }
    Ok(v)
}

/// When `warren submit` should start the workflow: `--at TIME` (RFC 3339)
/// or `--in DURATION`, set on the request as `not_before` or `delay_ms`
/// (the request's own, if it has one, is replaced).
pub fn set_start(request: &mut Value, at: Option<&str>, after: Option<&str>) -> anyhow::Result<()> {
    let Some(obj) = request.as_object_mut() else {
        anyhow::bail!("a workflow request must be a JSON object");
    };
    match (at, after) {
        (Some(_), Some(_)) => anyhow::bail!("give --at or --in, not both"),
        (Some(at), None) => {
            chrono::DateTime::parse_from_rfc3339(at).with_context(|| {
                format!("--at {at}: not an RFC 3339 time, e.g. 2026-12-24T18:00:00Z")
            })?;
            obj.remove("delay_ms");
            obj.insert("not_before".into(), Value::String(at.to_owned()));
        }
        (None, Some(after)) => {
            obj.remove("not_before");
            obj.insert("delay_ms".into(), Value::from(duration_ms(after)?));
        }
        (None, None) => {}
    }
    Ok(())
}

/// `1500ms`, `90s`, `10m`, `2h`, `1d` (one number and a unit) in ms.
pub fn duration_ms(s: &str) -> anyhow::Result<u64> {
    warren_shared::cli::duration_ms(s).map_err(|e| anyhow::anyhow!("--in {e}"))
}

#[cfg(test)]
mod start_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_start_times_become_request_fields() {
        assert_eq!(duration_ms("1500ms").unwrap(), 1500);
        assert_eq!(duration_ms("90s").unwrap(), 90_000);
        assert_eq!(duration_ms("10m").unwrap(), 600_000);
        assert_eq!(duration_ms("2h").unwrap(), 7_200_000);
        assert_eq!(duration_ms("1d").unwrap(), 86_400_000);
        for bad in ["", "10", "m", "10x", "-5s", "99999999999999999999d"] {
            assert!(duration_ms(bad).is_err(), "{bad}");
        }
        let mut r = json!({"not_before": "2026-01-01T00:00:00Z", "tasks": []});
        set_start(&mut r, None, Some("5s")).unwrap();
        assert_eq!(r, json!({"delay_ms": 5000, "tasks": []}));
        set_start(&mut r, Some("2026-12-24T18:00:00+01:00"), None).unwrap();
        assert_eq!(
            r,
            json!({"not_before": "2026-12-24T18:00:00+01:00", "tasks": []})
        );
        assert!(set_start(&mut r, Some("soon"), None).is_err());
        assert!(set_start(&mut r, Some("2026-12-24T18:00:00Z"), Some("5s")).is_err());
    }
}
