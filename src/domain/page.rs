use super::ValidationError;

/// Page size of a streamed list: 0 means the default, larger values are clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u32);

impl PageSize {
    pub const DEFAULT: u32 = 20;
    pub const MAX: u32 = 1000;

    pub fn parse(limit: i32) -> Result<Self, ValidationError> {
        match limit {
            ..0 => Err(ValidationError::new("limit", "must not be negative")),
            0 => Ok(Self(Self::DEFAULT)),
            n => Ok(Self((n as u32).min(Self::MAX))),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

/// `max_pages`: 0 streams to the end.
pub fn parse_max_pages(max_pages: i32) -> Result<Option<u32>, ValidationError> {
    match max_pages {
        ..0 => Err(ValidationError::new("max_pages", "must not be negative")),
        0 => Ok(None),
        n => Ok(Some(n as u32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_clamp_and_reject_negatives() {
        assert_eq!(PageSize::parse(0).map(PageSize::get), Ok(20));
        assert_eq!(PageSize::parse(7).map(PageSize::get), Ok(7));
        assert_eq!(PageSize::parse(1000).map(PageSize::get), Ok(1000));
        assert_eq!(PageSize::parse(i32::MAX).map(PageSize::get), Ok(1000));
        assert_eq!(
            PageSize::parse(-1).map_err(|e| e.field),
            Err("limit".to_owned())
        );
        assert_eq!(parse_max_pages(0), Ok(None));
        assert_eq!(parse_max_pages(3), Ok(Some(3)));
        assert!(parse_max_pages(-1).is_err());
    }
}
