//! A job's variables: GitLab's precedence, expansion, file-type variables,
//! the user's variables file, and `reports:dotenv` parsing.
//!
//! Precedence, lowest first (later wins): job predefined < pipeline
//! predefined (the context) < runner < YAML < dotenv of dependencies <
//! command line (`-v`, variables file).

use gantry_config::model::Variable;
use indexmap::IndexMap;

/// Variables collected in precedence order; `set` overrides an earlier one.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(from = "Vec<Variable>", into = "Vec<Variable>")]
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

    /// Expands every value as GitLab and the runner do: the server-side
    /// expansion ([`gantry_config::expand::expand_all`]: dependency order,
    /// cycles are errors, raw values untouched), then the runner's one pass
    /// over each non-raw value (`$$` → `$`, unknown names → ""). `fallback`
    /// answers names the set does not hold.
    pub fn expand(
        &self,
        fallback: &dyn Fn(&str) -> Option<String>,
    ) -> Result<IndexMap<String, String>, String> {
        let list: Vec<Variable> = self.vars.values().cloned().collect();
        let server = gantry_config::expand::expand_all(&list, fallback)?;
        let lookup = |name: &str| server.get(name).cloned().or_else(|| fallback(name));
        let mut out = IndexMap::with_capacity(self.vars.len());
        for v in self.vars.values() {
            let value = server.get(&v.name).cloned().unwrap_or_default();
            let value = if v.expand && !v.file {
                gantry_config::expand::expand_runner(&value, &lookup)
            } else {
                value
            };
            out.insert(v.name.clone(), value);
        }
        Ok(out)
    }
}

impl From<Vec<Variable>> for VarSet {
    fn from(vars: Vec<Variable>) -> VarSet {
        let mut set = VarSet::new();
        for v in vars {
            set.push(v);
        }
        set
    }
}

impl From<VarSet> for Vec<Variable> {
    fn from(set: VarSet) -> Vec<Variable> {
        set.vars.into_values().collect()
    }
}

/// Expands `$X`/`${X}` in a runner-side field (cache key, artifact path)
/// against the job's final variables; unknown names become "".
pub fn expand_runner(text: &str, vars: &IndexMap<String, String>) -> String {
    gantry_config::expand::expand_runner(text, &|name| vars.get(name).cloned())
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
        let mut set = VarSet::new();
        set.set("A", "x");
        let mut raw = Variable::new("R", "$A");
        raw.expand = false;
        set.push(raw);
        assert_eq!(set.expand(&none).unwrap()["R"], "$A");
    }

    #[test]
    fn cycle_is_an_error() {
        let mut set = VarSet::new();
        set.set("A", "$B");
        set.set("B", "$A");
        let err = set.expand(&none).unwrap_err();
        assert!(err.contains("circular"), "{err}");
    }

    #[test]
    fn fallback_is_used_for_unknown() {
        let mut set = VarSet::new();
        set.set("P", "$HOME/bin");
        let out = set
            .expand(&|n| (n == "HOME").then(|| "/h".to_string()))
            .unwrap();
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
        let json =
            parse_variables_file(r#"{"A": "1", "T": {"value": "x", "masked": true}}"#).unwrap();
        assert!(json[1].masked);
        assert!(parse_variables_file("1BAD=x").is_err());
    }
}
