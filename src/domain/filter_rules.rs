//! Which operands each field and operator of a filter condition take (see
//! `filter.proto`), and how an operand is fitted to its field.

use super::ValidationError;
use super::filter::{Cmp, Field, MAX_IN_VALUES, MAX_TEXT_CHARS, Operand, Operator, Scalar, Test};

fn invalid(part: &str, why: impl Into<String>) -> ValidationError {
    ValidationError::new(part, why)
}

/// The test a condition runs, or why `operand` does not fit `field` and `op`.
pub(super) fn test_for(
    field: &Field,
    op: Operator,
    operand: Operand,
) -> Result<Test, ValidationError> {
    check_operand(&operand)?;
    match field {
        Field::Property(_) => property_test(op, operand),
        Field::Email => email_test(op, operand),
        Field::CreatedAt | Field::UpdatedAt => time_test(op, operand),
        Field::Suppressed | Field::Unsubscribed => flag_test(op, operand),
    }
}

/// Strings bounded and free of NUL (no database stores one), numbers finite.
fn check_operand(operand: &Operand) -> Result<(), ValidationError> {
    let check = |scalar: &Scalar, part: &str| match scalar {
        Scalar::Text(text) if text.chars().count() > MAX_TEXT_CHARS => Err(invalid(
            part,
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        )),
        Scalar::Text(text) if text.contains('\0') => {
            Err(invalid(part, "must not contain NUL characters"))
        }
        Scalar::Number(n) if !n.is_finite() => Err(invalid(part, "must be a finite number")),
        _ => Ok(()),
    };
    match operand {
        Operand::Value(scalar) => check(scalar, "value"),
        Operand::Values(values) => {
            if values.is_empty() || values.len() > MAX_IN_VALUES {
                return Err(invalid(
                    "values",
                    format!("must hold 1 to {MAX_IN_VALUES} values"),
                ));
            }
            values.iter().try_for_each(|v| check(v, "values"))
        }
        Operand::None | Operand::Time(_) => Ok(()),
    }
}

fn cmp_of(op: Operator) -> Option<Cmp> {
    match op {
        Operator::LessThan => Some(Cmp::Lt),
        Operator::LessOrEqual => Some(Cmp::Le),
        Operator::GreaterThan => Some(Cmp::Gt),
        Operator::GreaterOrEqual => Some(Cmp::Ge),
        _ => None,
    }
}

/// The one operand an operator other than IN and EXISTS takes.
fn single(operand: Operand) -> Result<Scalar, ValidationError> {
    match operand {
        Operand::Value(scalar) => Ok(scalar),
        Operand::None => Err(invalid("value", "is required by this operator")),
        Operand::Values(_) => Err(invalid("values", "is only for FILTER_OPERATOR_IN")),
        Operand::Time(_) => Err(invalid(
            "timestamp",
            "is only for `created_at` and `updated_at`",
        )),
    }
}

fn text(operand: Operand, why: &str) -> Result<String, ValidationError> {
    match single(operand)? {
        Scalar::Text(text) if !text.is_empty() => Ok(text),
        _ => Err(invalid("value", why)),
    }
}

fn property_test(op: Operator, operand: Operand) -> Result<Test, ValidationError> {
    let scalar_kind = |scalar: Scalar, allow_null: bool| match scalar {
        Scalar::Null if !allow_null => Err(invalid(
            "value",
            "null is only for FILTER_OPERATOR_EQUALS; use FILTER_OPERATOR_EXISTS or NOT_EXISTS",
        )),
        scalar => Ok(scalar),
    };
    match op {
        Operator::Exists | Operator::NotExists => {
            if operand != Operand::None {
                return Err(invalid("value", "is not used with EXISTS and NOT_EXISTS"));
            }
            Ok(if op == Operator::Exists {
                Test::Exists
            } else {
                Test::NotExists
            })
        }
        Operator::Equals => Ok(Test::Eq(scalar_kind(single(operand)?, true)?)),
        // A boolean other than `b` is the other boolean.
        Operator::NotEquals => Ok(match scalar_kind(single(operand)?, false)? {
            Scalar::Bool(b) => Test::Eq(Scalar::Bool(!b)),
            scalar => Test::Ne(scalar),
        }),
        Operator::In => match operand {
            Operand::Values(values) => {
                let values: Result<Vec<_>, _> =
                    values.into_iter().map(|v| scalar_kind(v, false)).collect();
                values
                    .map(Test::In)
                    .map_err(|e| invalid("values", e.description))
            }
            _ => Err(invalid("values", "is required by FILTER_OPERATOR_IN")),
        },
        Operator::Contains => Ok(Test::Contains(
            text(operand, "must be a non-empty string")?.to_ascii_lowercase(),
        )),
        Operator::StartsWith => Ok(Test::StartsWith(
            text(operand, "must be a non-empty string")?.to_ascii_lowercase(),
        )),
        _ => {
            let cmp = cmp_of(op).expect("every other operator is an order comparison");
            match single(operand)? {
                scalar @ (Scalar::Number(_) | Scalar::Text(_)) => Ok(Test::Cmp(cmp, scalar)),
                _ => Err(invalid(
                    "value",
                    "must be a number or a string to compare in order",
                )),
            }
        }
    }
}

fn email_test(op: Operator, operand: Operand) -> Result<Test, ValidationError> {
    let lower = |operand: Operand| -> Result<Scalar, ValidationError> {
        match single(operand)? {
            Scalar::Text(text) => Ok(Scalar::Text(text.to_lowercase())),
            _ => Err(invalid("value", "must be a string for `email`")),
        }
    };
    match op {
        Operator::Equals => Ok(Test::Eq(lower(operand)?)),
        Operator::NotEquals => Ok(Test::Ne(lower(operand)?)),
        Operator::In => match operand {
            Operand::Values(values) => {
                let mut keys = Vec::with_capacity(values.len());
                for value in values {
                    keys.push(
                        lower(Operand::Value(value))
                            .map_err(|e| invalid("values", e.description))?,
                    );
                }
                Ok(Test::In(keys))
            }
            _ => Err(invalid("values", "is required by FILTER_OPERATOR_IN")),
        },
        Operator::Contains => Ok(Test::Contains(
            text(operand, "must be a non-empty string")?.to_lowercase(),
        )),
        Operator::StartsWith => Ok(Test::StartsWith(
            text(operand, "must be a non-empty string")?.to_lowercase(),
        )),
        Operator::Exists | Operator::NotExists => Err(invalid(
            "operator",
            "EXISTS and NOT_EXISTS are for properties; every contact has an email",
        )),
        _ => {
            let cmp = cmp_of(op).expect("every other operator is an order comparison");
            Ok(Test::Cmp(cmp, lower(operand)?))
        }
    }
}

fn time_test(op: Operator, operand: Operand) -> Result<Test, ValidationError> {
    let time = match operand {
        Operand::Time(time) => Scalar::Time(time),
        _ => {
            return Err(invalid(
                "timestamp",
                "is required for `created_at` and `updated_at` (and the only operand they take)",
            ));
        }
    };
    match (op, cmp_of(op)) {
        (Operator::Equals, _) => Ok(Test::Eq(time)),
        (Operator::NotEquals, _) => Ok(Test::Ne(time)),
        (_, Some(cmp)) => Ok(Test::Cmp(cmp, time)),
        _ => Err(invalid(
            "operator",
            "times take EQUALS, NOT_EQUALS and the order comparisons",
        )),
    }
}

fn flag_test(op: Operator, operand: Operand) -> Result<Test, ValidationError> {
    let flag = match single(operand)? {
        Scalar::Bool(flag) => flag,
        _ => return Err(invalid("value", "must be a boolean for a flag")),
    };
    match op {
        Operator::Equals => Ok(Test::Eq(Scalar::Bool(flag))),
        Operator::NotEquals => Ok(Test::Eq(Scalar::Bool(!flag))),
        _ => Err(invalid("operator", "flags take EQUALS and NOT_EQUALS")),
    }
}
