//! Parsers for command-line values: labels, durations and sizes.

use std::time::Duration;

/// Parses `key=value`; `key=` gives an empty value (which label updates treat as "remove").
pub fn label(s: &str) -> Result<(String, String), String> {
    let Some((key, value)) = s.split_once('=') else {
        return Err(format!("label {s:?} must be key=value"));
    };
    if key.is_empty() {
        return Err(format!("label {s:?} has an empty key"));
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// Parses a Go-style duration: one or more `<number><unit>` terms (`90s`, `1h30m`, `1.5h`),
/// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`. A bare `0` is zero.
pub fn duration(s: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("invalid duration {s:?}: {why} (e.g. 30s, 1h30m, 500ms)");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err(bad("expected a number"));
        }
        let value: f64 = num.parse().map_err(|_| bad("bad number"))?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        total += value * scale;
        rest = next;
    }
    Duration::try_from_secs_f64(total).map_err(|_| bad("out of range"))
}

/// Parses a size in bytes as docker does: a number with an optional unit `b`, `k`, `m`, `g`
/// (powers of 1024, any case, optionally followed by `b`: `64m`, `1GB`, `512k`).
pub fn size(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?} (e.g. 64m, 1g, 512k)");
    let lower = s.trim().to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits_end);
    let value: f64 = num.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(label("a=b").unwrap(), ("a".into(), "b".into()));
        assert_eq!(label("a=").unwrap(), ("a".into(), "".into()));
        assert_eq!(label("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(
            label("containerd.io/gc.root=1").unwrap().0,
            "containerd.io/gc.root"
        );
        assert!(label("a").is_err());
        assert!(label("=b").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("64m").unwrap(), 64 << 20);
        assert_eq!(size("1GB").unwrap(), 1 << 30);
        assert_eq!(size("512k").unwrap(), 512 << 10);
        assert_eq!(size("100").unwrap(), 100);
        assert_eq!(size("1.5k").unwrap(), 1536);
        for bad in ["", "m", "1x", "-1m", "0"] {
            assert!(size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations() {
        let ok = [
            ("30s", Duration::from_secs(30)),
            ("0", Duration::ZERO),
            ("1h30m", Duration::from_secs(5400)),
            ("1.5h", Duration::from_secs(5400)),
            ("500ms", Duration::from_millis(500)),
            ("2d", Duration::from_secs(172_800)),
            ("10us", Duration::from_micros(10)),
            ("1m0.5s", Duration::from_millis(60_500)),
        ];
        for (s, want) in ok {
            let got = duration(s).unwrap();
            let diff = got.abs_diff(want);
            assert!(diff < Duration::from_micros(1), "{s}: {got:?} != {want:?}");
        }
        for bad in ["", "10", "s", "1x", "-1s", "1.2.3s", "h1"] {
            assert!(duration(bad).is_err(), "{bad:?} accepted");
        }
    }
}
