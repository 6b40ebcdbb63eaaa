//! The values flags take that clap does not parse itself.

use std::time::Duration;

/// A collector's address as `http://host:port`: the exporter speaks plaintext gRPC, and
/// would read a bare `host:port` as HTTPS, which it is not built for.
pub fn parse_otlp_endpoint(raw: &str) -> Result<String, String> {
    match raw.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && http::Uri::try_from(raw).is_ok() => Ok(raw.to_owned()),
        _ => Err(format!(
            "`{raw}`: give the collector as http://HOST:PORT (OTLP over plaintext gRPC)"
        )),
    }
}

/// Durations as `250ms`, `5s` or `2m`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a duration like 5s"))?;
    let seconds = |per: u64| {
        value
            .checked_mul(per)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("`{raw}` is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(value)),
        "s" | "" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        "d" => seconds(24 * 3600),
        _ => Err(format!("`{raw}`: unit must be ms, s, m, h or d")),
    }
}

/// Sizes as `4MiB`, `512KiB`, `1MB` or plain bytes.
pub fn parse_size(raw: &str) -> Result<usize, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: usize = number
        .parse()
        .map_err(|_| format!("`{raw}` is not a size like 4MiB"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1024,
        "KB" | "kB" => 1000,
        "MiB" => 1024 * 1024,
        "MB" => 1000 * 1000,
        _ => return Err(format!("`{raw}`: unit must be B, KiB, KB, MiB or MB")),
    };
    value
        .checked_mul(factor)
        .ok_or_else(|| format!("`{raw}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5h"), Ok(Duration::from_secs(5 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 24 * 3600)));
        assert!(parse_duration("5w").is_err());
        assert!(parse_duration(&format!("{}d", u64::MAX)).is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4MiB"), Ok(4 * 1024 * 1024));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("4GiB").is_err());
        assert!(parse_size("MiB").is_err());
    }

    #[test]
    fn otlp_endpoints_are_plaintext_grpc_urls() {
        assert_eq!(
            parse_otlp_endpoint("http://127.0.0.1:4317").as_deref(),
            Ok("http://127.0.0.1:4317")
        );
        assert!(parse_otlp_endpoint("http://otel-collector:4317").is_ok());
        for bad in [
            "127.0.0.1:4317",
            "https://collector:4317",
            "http://",
            "http://a b",
        ] {
            let err = parse_otlp_endpoint(bad).expect_err(bad);
            assert!(err.contains("http://HOST:PORT"), "{err}");
        }
    }
}
