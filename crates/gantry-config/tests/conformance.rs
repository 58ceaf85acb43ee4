//! GitLab's own schema fixtures (`shared/conformance/gitlab-schema`) run
//! through [`gantry_config::compose::validate`], the way GitLab's schema
//! spec runs them: each top-level key `K` of a fixture is checked alone as
//! the document `{K: value}` (files under `workflow/auto_cancel/` hold a
//! whole document under each key). Positive fragments must be accepted,
//! negative ones rejected for a keyword reason.

use gantry_config::FileId;
use gantry_config::compose::validate;
use gantry_config::node::{Map, Node, Value};
use gantry_config::yaml;
use std::path::{Path, PathBuf};

/// Positive fixtures older than the schema shipped beside them: GitLab's
/// current schema rejects these too, so they are expected to fail.
const VERSION_SKEW: &[(&str, &str, &str)] = &[
    (
        "positive/run.yml",
        "step_using_action",
        "a `run:` step with `action:` (GitHub actions); the schema's step only allows `step`, `func` or `script`",
    ),
    (
        "positive/cache.yml",
        "cache-key-files-ten",
        "the schema allows 10 `cache:key:files`, the limit behind a feature flag that is off by default; the backend as shipped allows 2 (issue 7)",
    ),
];

/// The fixture directory, or the path that was looked at when it is absent.
fn shared_dir() -> Result<PathBuf, PathBuf> {
    let dir = match std::env::var_os("GANTRY_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    let dir = dir.join("conformance/gitlab-schema");
    if dir.is_dir() { Ok(dir) } else { Err(dir) }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
}

/// The fragments of one fixture: (key, document to validate).
fn fragments(rel: &str, root: &Node) -> Vec<(String, Node)> {
    let whole_documents = rel.contains("workflow/auto_cancel/");
    let Some(m) = root.as_map() else {
        return vec![("<root>".into(), root.clone())];
    };
    m.iter()
        .map(|(k, e)| {
            if whole_documents {
                (k.to_string(), e.value.clone())
            } else {
                let mut doc = Map::new();
                doc.insert(k, e.key_span, e.value.clone());
                (k.to_string(), Node::new(Value::Map(doc), root.span))
            }
        })
        .collect()
}

#[test]
fn gitlab_schema_fixtures() {
    let dir = match shared_dir() {
        Ok(dir) => dir,
        Err(missing) => {
            println!(
                "conformance: skipped: {} does not exist (the shared corpus is not checked out \
                 here; set GANTRY_SHARED to the shared directory to run it)",
                missing.display()
            );
            return;
        }
    };
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    assert!(!files.is_empty(), "no fixtures under {}", dir.display());

    let (mut accepted, mut rejected, mut skew_seen) = (0, 0, Vec::new());
    let mut mismatches = Vec::new();
    for (i, path) in files.iter().enumerate() {
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(path)
            .to_string_lossy()
            .replace('\\', "/");
        let positive = rel.starts_with("positive/");
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let root = match yaml::parse(&text, FileId(i as u32), &yaml::Limits::default()) {
            Ok(root) => root,
            Err(diags) => {
                mismatches.push(format!("{rel}: YAML error: {}", diags[0].message));
                continue;
            }
        };
        for (key, doc) in fragments(&rel, &root) {
            let diags = validate(&doc);
            let skew = VERSION_SKEW.iter().find(|(f, k, _)| *f == rel && *k == key);
            match (positive, diags.is_empty(), skew) {
                (true, true, None) => accepted += 1,
                (true, false, Some(_)) => skew_seen.push((rel.clone(), key.clone())),
                (false, false, _) => rejected += 1,
                (true, true, Some((_, _, why))) => mismatches.push(format!(
                    "{rel} `{key}`: listed as version skew ({why}) but accepted"
                )),
                (true, false, None) => mismatches.push(format!(
                    "{rel} `{key}`: positive fragment rejected: {}",
                    diags
                        .iter()
                        .map(|d| d.message.as_str())
                        .collect::<Vec<_>>()
                        .join(" | ")
                )),
                (false, true, _) => {
                    mismatches.push(format!("{rel} `{key}`: negative fragment accepted"))
                }
            }
            // A negative fragment must fail on a keyword, not for lack of jobs.
            if !positive && diags.iter().any(|d| d.message.contains("visible job")) {
                mismatches.push(format!("{rel} `{key}`: rejected for having no jobs"));
            }
        }
    }
    for (file, key, _) in VERSION_SKEW {
        if !skew_seen.iter().any(|(f, k)| f == file && k == key)
            && !mismatches.iter().any(|m| m.contains(file))
        {
            mismatches.push(format!(
                "{file} `{key}`: listed as version skew but not found"
            ));
        }
    }
    println!(
        "conformance: {accepted} positive accepted, {rejected} negative rejected, {} known version-skew",
        skew_seen.len()
    );
    assert!(
        mismatches.is_empty(),
        "{} conformance mismatches:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
