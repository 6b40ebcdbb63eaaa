//! `ContactFilter` and `ContactOrder` of the contract into the domain's, naming any
//! offending part by its path in the request (`filter.all[2].any[0].value`).

use prost_types::value::Kind;

use super::pb;
use crate::domain::filter::{
    Condition, Field, Filter, MAX_DEPTH, MAX_FILTERS, Operand, Operator, Scalar,
};
use crate::domain::{
    ContactFilter, ContactOrder, ContactQuery, Direction, SearchTerm, ValidationError,
};

/// The query of a ListContacts or CountContacts request.
pub fn contact_query(
    search: &str,
    suppressed: Option<bool>,
    filter: Option<pb::ContactFilter>,
    order: i32,
) -> Result<ContactQuery, ValidationError> {
    Ok(ContactQuery {
        search: SearchTerm::parse(search)?,
        suppressed,
        filter: filter.map(|f| contact_filter(f, "filter")).transpose()?,
        order: contact_order(order)?,
    })
}

pub fn contact_order(raw: i32) -> Result<ContactOrder, ValidationError> {
    use Direction::{Asc, Desc};
    use pb::ContactOrder as O;
    Ok(match O::try_from(raw) {
        Ok(O::Unspecified) => ContactOrder::Id,
        Ok(O::CreatedAtAsc) => ContactOrder::CreatedAt(Asc),
        Ok(O::CreatedAtDesc) => ContactOrder::CreatedAt(Desc),
        Ok(O::UpdatedAtAsc) => ContactOrder::UpdatedAt(Asc),
        Ok(O::UpdatedAtDesc) => ContactOrder::UpdatedAt(Desc),
        Ok(O::EmailAsc) => ContactOrder::Email(Asc),
        Ok(O::EmailDesc) => ContactOrder::Email(Desc),
        Err(_) => {
            return Err(ValidationError::new(
                "order_by",
                "is not a known ContactOrder",
            ));
        }
    })
}

/// The domain filter of `raw`; `path` names it in the request (`filter`).
pub fn contact_filter(
    raw: pb::ContactFilter,
    path: &str,
) -> Result<ContactFilter, ValidationError> {
    let mut budget = MAX_FILTERS;
    let root = node(raw, path, 1, &mut budget)?;
    ContactFilter::new(root, path)
}

/// One filter, at `depth`; `budget` is how many more filters the request may hold,
/// checked before each is converted so a huge filter is refused early.
fn node(
    raw: pb::ContactFilter,
    path: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Filter, ValidationError> {
    if depth > MAX_DEPTH {
        return Err(ValidationError::new(
            path,
            format!("nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    if *budget == 0 {
        return Err(ValidationError::new(
            path,
            format!("is past the {MAX_FILTERS} filters a request may hold"),
        ));
    }
    *budget -= 1;
    let set = [
        !raw.all.is_empty(),
        !raw.any.is_empty(),
        !raw.field.is_empty(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err(ValidationError::new(
            path,
            "must set exactly one of `all`, `any` and `field`",
        ));
    }
    if !raw.all.is_empty() || !raw.any.is_empty() {
        let (name, members, all) = if raw.all.is_empty() {
            ("any", raw.any, false)
        } else {
            ("all", raw.all, true)
        };
        let mut out = Vec::with_capacity(members.len().min(MAX_FILTERS));
        for (i, member) in members.into_iter().enumerate() {
            out.push(node(
                member,
                &format!("{path}.{name}[{i}]"),
                depth + 1,
                budget,
            )?);
        }
        return Ok(if all {
            Filter::All(out)
        } else {
            Filter::Any(out)
        });
    }
    condition(raw, path).map(Filter::Condition)
}

fn condition(raw: pb::ContactFilter, path: &str) -> Result<Condition, ValidationError> {
    let at = |part: &str| format!("{path}.{part}");
    let field = Field::parse(&raw.field, &at("field"))?;
    let op = operator(raw.operator)
        .ok_or_else(|| ValidationError::new(at("operator"), "must be a known FilterOperator"))?;
    let operand = operand(&raw, path)?;
    Condition::new(field, op, operand)
        .map_err(|err| ValidationError::new(at(&err.field), err.description))
}

fn operator(raw: i32) -> Option<Operator> {
    use pb::FilterOperator as F;
    Some(match F::try_from(raw).ok()? {
        F::Unspecified => return None,
        F::Equals => Operator::Equals,
        F::NotEquals => Operator::NotEquals,
        F::LessThan => Operator::LessThan,
        F::LessThanOrEqual => Operator::LessOrEqual,
        F::GreaterThan => Operator::GreaterThan,
        F::GreaterThanOrEqual => Operator::GreaterOrEqual,
        F::Exists => Operator::Exists,
        F::NotExists => Operator::NotExists,
        F::In => Operator::In,
        F::Contains => Operator::Contains,
        F::StartsWith => Operator::StartsWith,
    })
}

/// The one operand the condition sets.
fn operand(raw: &pb::ContactFilter, path: &str) -> Result<Operand, ValidationError> {
    let given = [
        raw.value.is_some(),
        !raw.values.is_empty(),
        raw.timestamp.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ValidationError::new(
            path,
            "must set at most one of `value`, `values` and `timestamp`",
        ));
    }
    if let Some(value) = &raw.value {
        return scalar(value, &format!("{path}.value")).map(Operand::Value);
    }
    if !raw.values.is_empty() {
        let mut values = Vec::with_capacity(raw.values.len());
        for (i, value) in raw.values.iter().enumerate() {
            values.push(scalar(value, &format!("{path}.values[{i}]"))?);
        }
        return Ok(Operand::Values(values));
    }
    if let Some(timestamp) = raw.timestamp {
        let field = format!("{path}.timestamp");
        if timestamp.nanos % 1000 != 0 {
            return Err(ValidationError::new(
                field,
                "must be a whole number of microseconds (the precision stored)",
            ));
        }
        return super::convert_activity::time(Some(timestamp), &field).map(Operand::Time);
    }
    Ok(Operand::None)
}

fn scalar(value: &prost_types::Value, path: &str) -> Result<Scalar, ValidationError> {
    match &value.kind {
        Some(Kind::NullValue(_)) => Ok(Scalar::Null),
        Some(Kind::BoolValue(b)) => Ok(Scalar::Bool(*b)),
        Some(Kind::NumberValue(n)) => Ok(Scalar::Number(*n)),
        Some(Kind::StringValue(s)) => Ok(Scalar::Text(s.clone())),
        Some(Kind::ListValue(_) | Kind::StructValue(_)) => Err(ValidationError::new(
            path,
            "must be a string, number, boolean or null, not a list or object",
        )),
        None => Err(ValidationError::new(path, "must hold a value")),
    }
}
