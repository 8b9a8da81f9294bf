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
