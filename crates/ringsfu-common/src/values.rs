//! The lenient values both configurations accept (ringsfu's and sfu-gateway's): the words upstream
//! deployments already use. Each parser answers the value, or the text saying what it accepts, which
//! the caller puts in its refusal (with the setting's name and where the value came from).

use crate::logging::LogLevel;

/// `1/true/yes/on` or `0/false/no/off`, any case.
pub fn parse_bool(text: &str) -> Result<bool, &'static str> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("true or false"),
    }
}

/// A log level, with upstream's `none`, `verbose` and `warning` as synonyms.
pub fn parse_log_level(text: &str) -> Result<LogLevel, &'static str> {
    Ok(match text.trim().to_ascii_lowercase().as_str() {
        "off" | "none" => LogLevel::Off,
        "error" => LogLevel::Error,
        "warn" | "warning" => LogLevel::Warn,
        "info" => LogLevel::Info,
        "debug" => LogLevel::Debug,
        "trace" | "verbose" => LogLevel::Trace,
        _ => return Err("off, error, warn, info, debug or trace"),
    })
}

/// The log format: whether the lines are JSON (`json`) or plain text (`text`).
pub fn parse_log_json(text: &str) -> Result<bool, &'static str> {
    match text.trim().to_ascii_lowercase().as_str() {
        "text" => Ok(false),
        "json" => Ok(true),
        _ => Err("text or json"),
    }
}

/// An integer from `min` to `max`, surrounding blanks allowed.
pub fn parse_int_in<T>(text: &str, min: T, max: T) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match text.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(format!("an integer from {min} to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_range_only() {
        assert_eq!(parse_int_in(" 42 ", 1u32, 100), Ok(42));
        assert_eq!(parse_int_in("0", 1u32, 100), Err("an integer from 1 to 100".to_string()));
        assert_eq!(parse_int_in("101", 1u32, 100), Err("an integer from 1 to 100".to_string()));
        assert!(parse_int_in("4.5", 1u32, 100).is_err());
        assert!(parse_int_in("-1", 1u32, 100).is_err());
    }

    #[test]
    fn words_any_case_and_padding() {
        for (text, want) in [("1", true), (" Yes ", true), ("ON", true), ("0", false), ("no", false), ("Off", false)] {
            assert_eq!(parse_bool(text), Ok(want), "{text:?}");
        }
        assert_eq!(parse_log_level(" Verbose"), Ok(LogLevel::Trace));
        assert_eq!(parse_log_level("warning"), Ok(LogLevel::Warn));
        assert_eq!(parse_log_level("NONE"), Ok(LogLevel::Off));
        assert_eq!(parse_log_json("JSON"), Ok(true));
        assert_eq!(parse_log_json("text "), Ok(false));
    }

    #[test]
    fn refusals_say_what_is_accepted() {
        assert_eq!(parse_bool(""), Err("true or false"));
        assert_eq!(parse_bool("maybe"), Err("true or false"));
        assert_eq!(parse_log_level("loud"), Err("off, error, warn, info, debug or trace"));
        assert_eq!(parse_log_json("xml"), Err("text or json"));
    }
}
