//! A job's variables: GitLab's precedence, expansion, file-type variables,
//! the user's variables file, and `reports:dotenv` parsing.
//!
//! Precedence, lowest first (later wins): job predefined < pipeline
//! predefined (the context) < runner < YAML < dotenv of dependencies <
//! command line (`-v`, variables file).

use gantry_config::model::Variable;
use indexmap::IndexMap;

/// Variables collected in precedence order; `set` overrides an earlier one.
#[derive(Clone, Debug, Default)]
pub struct VarSet {
    vars: IndexMap<String, Variable>,
}

impl VarSet {
    pub fn new() -> Self {
        VarSet::default()
    }

    /// Adds or overrides `name` with a plain, expandable value.
    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        self.push(Variable::new(name, value));
    }

    /// Adds or overrides a variable, keeping its flags. A later definition
    /// moves the variable to the end (GitLab's collection returns the last).
    pub fn push(&mut self, var: Variable) {
        self.vars.shift_remove(&var.name);
        self.vars.insert(var.name.clone(), var);
    }

    pub fn extend<'a>(&mut self, vars: impl IntoIterator<Item = &'a Variable>) {
        for v in vars {
            self.push(v.clone());
        }
    }

    pub fn get(&self, name: &str) -> Option<&Variable> {
        self.vars.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Variable> {
        self.vars.values()
    }

    /// Values of masked variables (before and after expansion), for the masker.
    pub fn masked_values(&self, expanded: &IndexMap<String, String>) -> Vec<String> {
        let mut out = Vec::new();
        for v in self.vars.values().filter(|v| v.masked) {
            out.push(v.value.clone());
            if let Some(e) = expanded.get(&v.name) {
                out.push(e.clone());
            }
        }
        out.retain(|s| !s.is_empty());
        out
    }

    /// Expands every value against the set (and `fallback` for names the set
    /// does not hold). Raw (`expand: false`) values are kept as written.
    pub fn expand(
        &self,
        fallback: &dyn Fn(&str) -> Option<String>,
    ) -> Result<IndexMap<String, String>, String> {
        let list: Vec<Variable> = self.vars.values().cloned().collect();
        expand_all(&list, fallback)
    }
}

/// Expands a list of variables (later wins) into final values.
///
/// `$VAR`, `${VAR}` and `%VAR%` are references; `$$` is a literal `$`.
/// Unknown names come from `fallback`, else expand to "". A reference cycle
/// is an error naming the variables.
pub fn expand_all(
    vars: &[Variable],
    fallback: &dyn Fn(&str) -> Option<String>,
) -> Result<IndexMap<String, String>, String> {
    let mut by_name: IndexMap<&str, &Variable> = IndexMap::new();
    for v in vars {
        by_name.shift_remove(v.name.as_str());
        by_name.insert(v.name.as_str(), v);
    }
    let mut done: IndexMap<String, String> = IndexMap::new();
    let mut stack: Vec<String> = Vec::new();
    let names: Vec<&str> = by_name.keys().copied().collect();
    for name in names {
        resolve(name, &by_name, fallback, &mut done, &mut stack)?;
    }
    // Keep the precedence order of the input.
    let mut out = IndexMap::new();
    for name in by_name.keys() {
        if let Some(v) = done.get(*name) {
            out.insert((*name).to_string(), v.clone());
        }
    }
    Ok(out)
}

fn resolve(
    name: &str,
    by_name: &IndexMap<&str, &Variable>,
    fallback: &dyn Fn(&str) -> Option<String>,
    done: &mut IndexMap<String, String>,
    stack: &mut Vec<String>,
) -> Result<Option<String>, String> {
    if let Some(v) = done.get(name) {
        return Ok(Some(v.clone()));
    }
    let Some(var) = by_name.get(name) else {
        return Ok(fallback(name));
    };
    if !var.expand || var.file {
        // Raw values are passed through; file variables expand to their path
        // later, and their content is never expanded by the runner.
        done.insert(name.to_string(), var.value.clone());
        return Ok(Some(var.value.clone()));
    }
    if stack.iter().any(|s| s == name) {
        stack.push(name.to_string());
        return Err(format!(
            "circular variable reference: {}",
            stack.join(" -> ")
        ));
    }
    stack.push(name.to_string());
    let mut err = None;
    let value = substitute(&var.value, &mut |reference| {
        if err.is_some() {
            return String::new();
        }
        match resolve(reference, by_name, fallback, done, stack) {
            Ok(v) => v.unwrap_or_default(),
            Err(e) => {
                err = Some(e);
                String::new()
            }
        }
    });
    stack.pop();
    if let Some(e) = err {
        return Err(e);
    }
    done.insert(name.to_string(), value.clone());
    Ok(Some(value))
}

/// Replaces `$NAME`, `${NAME}` and `%NAME%` in `text` through `lookup`.
pub fn substitute(text: &str, lookup: &mut dyn FnMut(&str) -> String) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let name_start = |b: u8| b.is_ascii_alphabetic() || b == b'_';
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'$' && i + 1 < bytes.len() {
            let next = bytes[i + 1];
            if next == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if next == b'{' {
                if let Some(end) = text[i + 2..].find('}') {
                    let name = &text[i + 2..i + 2 + end];
                    if !name.is_empty()
                        && name_start(name.as_bytes()[0])
                        && name.bytes().all(name_char)
                    {
                        out.push_str(&lookup(name));
                        i += 3 + end;
                        continue;
                    }
                }
            } else if name_start(next) {
                let mut j = i + 1;
                while j < bytes.len() && name_char(bytes[j]) {
                    j += 1;
                }
                out.push_str(&lookup(&text[i + 1..j]));
                i = j;
                continue;
            }
        } else if b == b'%' && i + 1 < bytes.len() && name_start(bytes[i + 1]) {
            let mut j = i + 1;
            while j < bytes.len() && name_char(bytes[j]) {
                j += 1;
            }
            if j < bytes.len() && bytes[j] == b'%' {
                out.push_str(&lookup(&text[i + 1..j]));
                i = j + 1;
                continue;
            }
        }
        // Copy one UTF-8 character.
        let ch_len = text[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Expands `$X`/`${X}` in a runner-side field (cache key, artifact path,
/// image name) against the job's final variables; unknown names become "".
pub fn expand_runner(text: &str, vars: &IndexMap<String, String>) -> String {
    substitute(text, &mut |name| vars.get(name).cloned().unwrap_or_default())
}

/// GitLab's dotenv report limits (plan limits `dotenv_size`, `dotenv_variables`).
pub const DOTENV_MAX_BYTES: usize = 5 * 1024;
pub const DOTENV_MAX_VARIABLES: usize = 20;

/// Parses an `artifacts:reports:dotenv` file the way GitLab does: each line
/// `^(.*?)=(.*)$`, key and value stripped; blank lines are skipped.
pub fn parse_dotenv_report(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.len() > DOTENV_MAX_BYTES {
        return Err(format!(
            "dotenv report is {} bytes, more than the limit of {DOTENV_MAX_BYTES}",
            text.len()
        ));
    }
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("dotenv report line {}: invalid format", n + 1));
        };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!("dotenv report line {}: invalid key format", n + 1));
        }
        out.retain(|(k, _)| k != key);
        out.push((key.to_string(), value.trim().to_string()));
    }
    if out.len() > DOTENV_MAX_VARIABLES {
        return Err(format!(
            "dotenv report has {} variables, more than the limit of {DOTENV_MAX_VARIABLES}",
            out.len()
        ));
    }
    Ok(out)
}

/// Parses the user's variables file (values not committed to the repository).
///
/// Two forms:
/// - JSON: `{"NAME": "value", "TOKEN": {"value": "...", "masked": true, "file": false}}`
/// - dotenv: `NAME=value` lines, `#` comments, optional `export `, optional
///   surrounding quotes, and optional leading flags: `masked TOKEN=...`,
///   `file KUBECONFIG=...`, `masked file KEY=...`.
pub fn parse_variables_file(text: &str) -> Result<Vec<Variable>, String> {
    if text.trim_start().starts_with('{') {
        return parse_variables_json(text);
    }
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let mut line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (mut masked, mut file) = (false, false);
        loop {
            if let Some(rest) = line.strip_prefix("masked ") {
                masked = true;
                line = rest.trim_start();
            } else if let Some(rest) = line.strip_prefix("file ") {
                file = true;
                line = rest.trim_start();
            } else if let Some(rest) = line.strip_prefix("export ") {
                line = rest.trim_start();
            } else {
                break;
            }
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected NAME=VALUE", n + 1));
        };
        let key = key.trim();
        if !valid_name(key) {
            return Err(format!("line {}: `{key}` is not a variable name", n + 1));
        }
        let mut value = value.trim();
        for q in ['"', '\''] {
            if value.len() >= 2 && value.starts_with(q) && value.ends_with(q) {
                value = &value[1..value.len() - 1];
                break;
            }
        }
        let mut var = Variable::new(key, value);
        var.masked = masked;
        var.file = file;
        out.push(var);
    }
    Ok(out)
}

fn parse_variables_json(text: &str) -> Result<Vec<Variable>, String> {
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let serde_json::Value::Object(map) = root else {
        return Err("expected a JSON object of variables".into());
    };
    let mut out = Vec::new();
    for (name, spec) in map {
        if !valid_name(&name) {
            return Err(format!("`{name}` is not a variable name"));
        }
        let var = match spec {
            serde_json::Value::String(s) => Variable::new(&name, s),
            serde_json::Value::Number(n) => Variable::new(&name, n.to_string()),
            serde_json::Value::Bool(b) => Variable::new(&name, b.to_string()),
            serde_json::Value::Object(o) => {
                let value = match o.get("value") {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                    None => return Err(format!("`{name}`: missing `value`")),
                };
                let flag = |k: &str| o.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
                let mut var = Variable::new(&name, value);
                var.masked = flag("masked");
                var.file = flag("file");
                var.expand = o.get("expand").and_then(|v| v.as_bool()).unwrap_or(true);
                var
            }
            _ => return Err(format!("`{name}`: expected a string or an object")),
        };
        out.push(var);
    }
    Ok(out)
}

/// Parses `-v KEY=VALUE`.
pub fn parse_cli_variable(arg: &str) -> Result<Variable, String> {
    match arg.split_once('=') {
        Some((k, v)) if valid_name(k) => Ok(Variable::new(k, v)),
        _ => Err(format!("expected KEY=VALUE, got `{arg}`")),
    }
}

pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn later_wins_and_nested_expansion() {
        let mut set = VarSet::new();
        set.set("A", "one");
        set.set("B", "${A}-two");
        set.set("A", "uno");
        set.set("C", "$B/%A%/$$HOME/$MISSING.");
        let out = set.expand(&none).unwrap();
        assert_eq!(out["B"], "uno-two");
        assert_eq!(out["C"], "uno-two/uno/$HOME/.");
    }

    #[test]
    fn raw_values_are_not_expanded() {
        let mut raw = Variable::new("R", "$A");
        raw.expand = false;
        let out = expand_all(&[Variable::new("A", "x"), raw], &none).unwrap();
        assert_eq!(out["R"], "$A");
    }

    #[test]
    fn cycle_is_an_error() {
        let vars = [Variable::new("A", "$B"), Variable::new("B", "$A")];
        let err = expand_all(&vars, &none).unwrap_err();
        assert!(err.contains("circular"), "{err}");
    }

    #[test]
    fn fallback_is_used_for_unknown() {
        let vars = [Variable::new("P", "$HOME/bin")];
        let out = expand_all(&vars, &|n| (n == "HOME").then(|| "/h".to_string())).unwrap();
        assert_eq!(out["P"], "/h/bin");
    }

    #[test]
    fn dotenv_report_rules() {
        let parsed = parse_dotenv_report("A=1\n\n B = two words \nC=x=y\nA=3\n").unwrap();
        assert_eq!(
            parsed,
            vec![
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into()),
                ("A".into(), "3".into())
            ]
        );
        assert!(parse_dotenv_report("no equals\n").is_err());
        assert!(parse_dotenv_report("BAD-KEY=1\n").is_err());
        let many: String = (0..21).map(|i| format!("V{i}=1\n")).collect();
        assert!(parse_dotenv_report(&many).is_err());
        assert!(parse_dotenv_report(&"A=".repeat(3000)).is_err());
    }

    #[test]
    fn variables_file_forms() {
        let vars = parse_variables_file(
            "# secrets\nexport A=1\nmasked TOKEN=\"s3cr3t-token\"\nfile masked KEY='k'\n",
        )
        .unwrap();
        assert_eq!(vars[0].name, "A");
        assert!(vars[1].masked && !vars[1].file);
        assert_eq!(vars[1].value, "s3cr3t-token");
        assert!(vars[2].masked && vars[2].file);
        let json = parse_variables_file(r#"{"A": "1", "T": {"value": "x", "masked": true}}"#)
            .unwrap();
        assert!(json[1].masked);
        assert!(parse_variables_file("1BAD=x").is_err());
    }
}
