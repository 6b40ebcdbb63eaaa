//! `x-kraiter-consistency`: where a call's heavy reads may run. The streamed lists
//! (contacts, sends, scheduled sends, timeline) and CountContacts read from a usable
//! read replica by default, which may trail the primary by its replay lag (at most
//! `--max-replica-lag` when one is used); `x-kraiter-consistency: primary` reads
//! them from the primary, which has every write acknowledged before the call. A
//! header rather than a request field: it applies alike to every RPC, needs no
//! change to the contract or to generated clients, and a proxy or an interceptor
//! can set it for a whole client. Every other read runs on the primary whatever it
//! says.

use tonic::metadata::MetadataMap;

use crate::domain::ValidationError;
use crate::store::ReadFrom;

pub const HEADER: &str = "x-kraiter-consistency";

/// The call's choice: `replica` (the default) or `primary`; anything else is
/// INVALID_ARGUMENT naming the header.
pub(crate) fn read_from(metadata: &MetadataMap) -> Result<ReadFrom, ValidationError> {
    let Some(value) = metadata.get(HEADER) else {
        return Ok(ReadFrom::Replica);
    };
    match value.to_str().map(str::trim) {
        Ok(value) if value.eq_ignore_ascii_case("primary") => Ok(ReadFrom::Primary),
        Ok(value) if value.eq_ignore_ascii_case("replica") => Ok(ReadFrom::Replica),
        _ => Err(ValidationError::new(
            HEADER,
            "must be `primary` or `replica`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_chooses_where_heavy_reads_run() {
        let mut metadata = MetadataMap::new();
        assert_eq!(read_from(&metadata).ok(), Some(ReadFrom::Replica));
        metadata.insert(HEADER, "primary".parse().expect("ascii"));
        assert_eq!(read_from(&metadata).ok(), Some(ReadFrom::Primary));
        metadata.insert(HEADER, "Replica".parse().expect("ascii"));
        assert_eq!(read_from(&metadata).ok(), Some(ReadFrom::Replica));
        metadata.insert(HEADER, "strong".parse().expect("ascii"));
        let err = read_from(&metadata).expect_err("an unknown value");
        assert_eq!(err.field, HEADER);
    }
}
