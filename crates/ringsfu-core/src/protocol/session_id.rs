//! Session ids as Odoo sends them: JSON numbers or strings, compared strictly (5 and "5" differ).

use serde_json::{Number, Value};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionId {
    Number(Number),
    Text(Box<str>),
}

impl SessionId {
    /// Accepts what upstream accepts as a truthy id, except booleans: a non-zero number or a
    /// non-empty string.
    pub fn from_value(value: &Value) -> Option<SessionId> {
        match value {
            Value::Number(n) if n.as_f64() != Some(0.0) => Some(SessionId::Number(n.clone())),
            Value::String(s) if !s.is_empty() => Some(SessionId::Text(s.as_str().into())),
            _ => None,
        }
    }

    /// The id as a JSON value, in the type the client sent.
    pub fn to_value(&self) -> Value {
        match self {
            SessionId::Number(n) => Value::Number(n.clone()),
            SessionId::Text(s) => Value::String(s.to_string()),
        }
    }

    /// The id as a JSON object key (as JavaScript stringifies it).
    pub fn to_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionId::Number(n) => write!(f, "{n}"),
            SessionId::Text(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_typed_and_must_be_truthy() {
        assert_ne!(SessionId::from_value(&json!(5)), SessionId::from_value(&json!("5")));
        assert_eq!(SessionId::from_value(&json!(5)), SessionId::from_value(&json!(5)));
        for falsy in [json!(0), json!(""), json!(null), json!(false), json!(true), json!([1]), json!({})] {
            assert_eq!(SessionId::from_value(&falsy), None, "{falsy}");
        }
        let id = SessionId::from_value(&json!(42)).unwrap();
        assert_eq!(id.to_value(), json!(42));
        assert_eq!(id.to_key(), "42");
    }
}
