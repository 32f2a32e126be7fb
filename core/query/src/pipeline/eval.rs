//! Evaluating an [`Expr`] over one event, as LogScale's `eval`/`test`/`:=` do: values are
//! text; arithmetic and `<`-style comparisons work on numbers; a missing field or text in
//! arithmetic (or a division by zero) gives no value, and a comparison with no value on
//! a side is false. A `concat` longer than `transform::MAX_VALUE_BYTES` has no value.

use std::borrow::Cow;

use super::transform::MAX_VALUE_BYTES;
use crate::lang::{Expr, ExprCmp, format_number};
use crate::render::{Event, field_text};

fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|n| n.is_finite())
}

fn boolean(b: bool) -> Option<Cow<'static, str>> {
    Some(Cow::Borrowed(if b { "true" } else { "false" }))
}

/// Whether a value counts as true (`test`, `if`, `and`, `or`, `not`).
pub(crate) fn truthy(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The expression's value, or `None` when it has none.
pub(crate) fn eval<'a>(expr: &Expr, event: &'a Event) -> Option<Cow<'a, str>> {
    match expr {
        Expr::Field(name) => field_text(event, name),
        Expr::Str(text) => Some(Cow::Owned(text.clone())),
        Expr::Num(n) => Some(Cow::Owned(format_number(*n))),
        Expr::Neg(inner) => {
            let n = number(&eval(inner, event)?)?;
            Some(Cow::Owned(format_number(-n)))
        }
        Expr::Arith(op, left, right) => {
            let a = number(&eval(left, event)?)?;
            let b = number(&eval(right, event)?)?;
            let n = match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ if b == 0.0 => return None,
                _ => a / b,
            };
            n.is_finite().then(|| Cow::Owned(format_number(n)))
        }
        Expr::Cmp(op, left, right) => {
            let (Some(a), Some(b)) = (eval(left, event), eval(right, event)) else {
                return boolean(false);
            };
            let ordering = match (number(&a), number(&b)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => a.as_ref().cmp(b.as_ref()),
            };
            boolean(match op {
                ExprCmp::Eq => ordering.is_eq(),
                ExprCmp::Ne => ordering.is_ne(),
                ExprCmp::Lt => ordering.is_lt(),
                ExprCmp::Le => ordering.is_le(),
                ExprCmp::Gt => ordering.is_gt(),
                ExprCmp::Ge => ordering.is_ge(),
            })
        }
        Expr::And(terms) => boolean(terms.iter().all(|t| truthy(eval(t, event).as_deref()))),
        Expr::Or(terms) => boolean(terms.iter().any(|t| truthy(eval(t, event).as_deref()))),
        Expr::Not(inner) => boolean(!truthy(eval(inner, event).as_deref())),
        Expr::If { cond, then, otherwise } => {
            if truthy(eval(cond, event).as_deref()) {
                eval(then, event)
            } else {
                eval(otherwise, event)
            }
        }
        Expr::Coalesce(parts) => parts.iter().find_map(|p| eval(p, event).filter(|v| !v.is_empty())),
        Expr::Lower(inner) => Some(Cow::Owned(eval(inner, event)?.to_lowercase())),
        Expr::Upper(inner) => Some(Cow::Owned(eval(inner, event)?.to_uppercase())),
        Expr::Length(inner) => Some(Cow::Owned(eval(inner, event)?.chars().count().to_string())),
        Expr::Concat(parts) => {
            let mut text = String::new();
            for part in parts {
                if let Some(value) = eval(part, event) {
                    text.push_str(&value);
                    if text.len() > MAX_VALUE_BYTES {
                        return None;
                    }
                }
            }
            Some(Cow::Owned(text))
        }
    }
}
