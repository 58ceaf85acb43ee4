//! `spec:inputs` on the Run pipeline form: the entry file's declared inputs
//! become typed fields (choice list, checkbox, number, text, JSON array);
//! the form's text becomes typed values, which gantry-config checks with
//! GitLab's messages (this module only maps those messages to fields).

use super::session::Form;
use gantry_config::include::{InputSpec, InputType};
use serde_json::{Map, Value};

/// One input on the form.
pub struct InputField {
    pub name: String,
    /// `string`, `number`, `boolean` or `array`.
    pub kind: &'static str,
    /// The value as text (booleans: `checked`).
    pub value: String,
    pub checked: bool,
    pub description: String,
    pub options: Vec<String>,
    /// The `regex` the value must match, shown as a hint.
    pub regex: String,
    pub required: bool,
    pub error: String,
}

fn kind_name(kind: Option<InputType>) -> &'static str {
    match kind {
        Some(InputType::Number) => "number",
        Some(InputType::Boolean) => "boolean",
        Some(InputType::Array) => "array",
        _ => "string",
    }
}

/// A value as the form shows it: arrays as JSON.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Array(_) | Value::Object(_) => value.to_string(),
        other => other.to_string(),
    }
}

/// The fields for `specs`, showing `given` values or else the defaults.
pub fn fields(specs: &[InputSpec], given: &Map<String, Value>) -> Vec<InputField> {
    specs
        .iter()
        .map(|spec| {
            let value = given.get(&spec.name).or(spec.default.as_ref());
            InputField {
                name: spec.name.clone(),
                kind: kind_name(spec.kind),
                value: value.map(text_of).unwrap_or_default(),
                checked: value == Some(&Value::Bool(true)),
                description: spec.description.clone().unwrap_or_default(),
                options: spec.options.iter().map(text_of).collect(),
                regex: spec.regex.clone().unwrap_or_default(),
                required: spec.default.is_none(),
                error: String::new(),
            }
        })
        .collect()
}

/// Stored input values as the form's `input:NAME` fields, the defaults
/// for those not given (a re-run's form starts from the inputs its
/// pipeline was created with).
pub fn form_of(specs: &[InputSpec], values: &Map<String, Value>) -> Form {
    Form(
        specs
            .iter()
            .filter_map(|spec| {
                let value = values.get(&spec.name).or(spec.default.as_ref())?;
                Some((format!("input:{}", spec.name), text_of(value)))
            })
            .collect(),
    )
}

/// The defaults, and for required inputs a stand-in of their type, so the
/// configuration can be read to show its variables before the user chose.
pub fn stand_ins(specs: &[InputSpec]) -> Map<String, Value> {
    specs
        .iter()
        .map(|spec| {
            let value = spec.default.clone().unwrap_or_else(|| {
                spec.options.first().cloned().unwrap_or(match spec.kind {
                    Some(InputType::Number) => Value::from(0),
                    Some(InputType::Boolean) => Value::Bool(false),
                    Some(InputType::Array) => Value::Array(Vec::new()),
                    _ => Value::String(String::new()),
                })
            });
            (spec.name.clone(), value)
        })
        .collect()
}

/// The typed values of the form's `input:NAME` fields. Text that is not of
/// the input's type stays text, so the check names the type it should be;
/// an empty field is left out (the default, or "required value has not
/// been provided").
pub fn from_form(specs: &[InputSpec], form: &Form) -> Map<String, Value> {
    let mut values = Map::new();
    for spec in specs {
        let key = format!("input:{}", spec.name);
        if spec.kind == Some(InputType::Boolean) && spec.options.is_empty() {
            // An unchecked checkbox is not sent.
            values.insert(
                spec.name.clone(),
                Value::Bool(form.get(&key) == Some("true")),
            );
            continue;
        }
        let Some(text) = form.get(&key).map(str::trim) else {
            continue;
        };
        if text.is_empty() {
            continue;
        }
        let value = match spec.kind {
            Some(InputType::Number) => text
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    text.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Value::from)
                })
                .unwrap_or_else(|| Value::String(text.to_string())),
            Some(InputType::Boolean) => match text {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => Value::String(text.to_string()),
            },
            Some(InputType::Array) => match serde_json::from_str::<Value>(text) {
                Ok(v @ Value::Array(_)) => v,
                _ => Value::String(text.to_string()),
            },
            _ => Value::String(text.to_string()),
        };
        values.insert(spec.name.clone(), value);
    }
    values
}

/// Puts each message of the form "`…`: `NAME` input: …" on its field;
/// returns the messages that belong to no field.
pub fn assign_errors(fields: &mut [InputField], messages: Vec<String>) -> Vec<String> {
    let mut rest = Vec::new();
    for message in messages {
        let field = fields.iter_mut().find_map(|f| {
            let marker = format!("`{}` input: ", f.name);
            message.find(&marker).map(|at| (f, at))
        });
        match field {
            Some((f, at)) => {
                if !f.error.is_empty() {
                    f.error.push_str("; ");
                }
                f.error.push_str(&message[at..]);
            }
            None => rest.push(message),
        }
    }
    rest
}
