//! Byte sizes as people write them: parsing `--budget` values and printing sizes in reports.

use crate::error::PlanError;

const KIB: f64 = 1024.0;

/// Parses "11GiB", "512MiB", "8GB", "1.5 GiB", "2048" (bytes). Binary (KiB, MiB, GiB, TiB) and decimal
/// (kB, MB, GB, TB) units; case-insensitive; `B` alone or no unit means bytes.
pub fn parse_budget(s: &str) -> Result<u64, PlanError> {
    let bad = |problem: &str| PlanError::InvalidSize {
        field: "--budget".into(),
        value: s.to_string(),
        problem: problem.to_string(),
    };
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(bad("expected a number followed by a unit such as GiB, MiB or GB"));
    }
    let value: f64 = num.parse().map_err(|_| bad("the number is not a decimal"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => KIB,
        "m" | "mib" => KIB * KIB,
        "g" | "gib" => KIB * KIB * KIB,
        "t" | "tib" => KIB * KIB * KIB * KIB,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(bad("unknown unit (use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB)")),
    };
    let bytes = value * scale;
    if !(bytes.is_finite() && bytes < u64::MAX as f64) {
        return Err(bad("is larger than 2^64 bytes"));
    }
    if bytes < 1.0 {
        return Err(bad("must be at least one byte"));
    }
    Ok(bytes.round() as u64)
}

/// Human-readable binary size, e.g. "1.50 GiB", "320.0 MiB".
pub fn format_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= KIB * KIB * KIB {
        format!("{:.2} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(parse_budget("11GiB").unwrap(), 11 * (1 << 30));
        assert_eq!(parse_budget("512MiB").unwrap(), 512 * (1 << 20));
        assert_eq!(parse_budget("8GB").unwrap(), 8_000_000_000);
        assert_eq!(parse_budget("1.5 GiB").unwrap(), 3 * (1 << 29));
        assert_eq!(parse_budget("4096").unwrap(), 4096);
        assert_eq!(parse_budget("2gib").unwrap(), 2 * (1 << 30));
    }

    #[test]
    fn garbage_names_the_budget_field() {
        for s in ["", "GiB", "12 parsecs", "1.2.3GiB", "0GiB"] {
            let e = parse_budget(s).unwrap_err().to_string();
            assert!(e.contains("--budget"), "{s}: {e}");
        }
        for s in ["18446744073709551615B", "99999999999999999999", "20000000TiB"] {
            let e = parse_budget(s).unwrap_err().to_string();
            assert!(e.contains("larger than 2^64 bytes"), "{s}: {e}");
        }
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_bytes(3 * (1 << 29)), "1.50 GiB");
        assert_eq!(format_bytes(320 << 20), "320.0 MiB");
        assert_eq!(format_bytes(12), "12 B");
    }
}
