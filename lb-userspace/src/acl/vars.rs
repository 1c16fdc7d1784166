//! Variables (`set-var(txn.name)`, `var(txn.name)`), HAProxy's scopes: `proc` (the
//! process), `sess` (the client connection), `txn` (the request and its response), `req`
//! and `res` (HAProxy keeps these for the request or response processing only; in lb a
//! request's `req` and `res` variables live as long as its `txn` ones). The values live
//! outside this leaf: an input reaches them through [`Vars`].

use super::format::SampleValue;

/// A variable scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Proc,
    Sess,
    Txn,
    Req,
    Res,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Proc => "proc",
            Scope::Sess => "sess",
            Scope::Txn => "txn",
            Scope::Req => "req",
            Scope::Res => "res",
        }
    }

    pub fn from_name(s: &str) -> Option<Scope> {
        Some(match s {
            "proc" => Scope::Proc,
            "sess" => Scope::Sess,
            "txn" => Scope::Txn,
            "req" => Scope::Req,
            "res" => Scope::Res,
            _ => return None,
        })
    }
}

/// `scope.name`, as `set-var` and `var()` take it: the scope and the name (letters,
/// digits, `.` and `_`, as HAProxy allows).
pub fn parse_name(s: &str) -> Result<(Scope, String), String> {
    let (scope, name) = s
        .split_once('.')
        .ok_or_else(|| format!("variable '{s}' needs a scope: proc., sess., txn., req. or res."))?;
    let scope = Scope::from_name(scope).ok_or_else(|| {
        format!("unknown variable scope '{scope}' in '{s}' (proc, sess, txn, req, res)")
    })?;
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    {
        return Err(format!(
            "invalid variable name '{name}' (letters, digits, '_' and '.')"
        ));
    }
    Ok((scope, name.to_owned()))
}

/// Variables as the expression language reads them.
pub trait Vars {
    /// The value of `scope.name`; `None` when it is not set.
    fn get(&self, scope: Scope, name: &str) -> Option<SampleValue>;
}
