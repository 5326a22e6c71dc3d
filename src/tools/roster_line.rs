//! One readable line per person, from the contract's attendance object:
//! what `rollcall watch` prints per update and `rollcall simulate` prints
//! for the final roster. Written from the JSON (not the engine's types) so
//! it reads whatever a server of another version sends.

use chrono::{DateTime, Local};
use serde_json::Value;

/// `14:03:12  Ameer Maher           joined  0:12:14  present so far 82.5 %`:
/// the local time of `timestamp` (the instant the numbers are exact at),
/// name, live status, time attended and the verdict. Before `is_final` the
/// verdict is only "so far" (rule 28), and a person in the meeting is never
/// shown absent: they can still reach any verdict.
pub fn person(attendance: &Value, timestamp: Option<&str>) -> String {
    let name = match attendance["name"].as_str() {
        Some(n) if !n.is_empty() => n,
        _ => attendance["identity"].as_str().unwrap_or("?"),
    };
    format!(
        "{}  {:<22} {:<6}  {}  {}",
        local_time(timestamp),
        name,
        attendance["status"].as_str().unwrap_or("?"),
        hms(attendance["duration_ms"].as_i64().unwrap_or(0)),
        verdict(attendance)
    )
}

/// The snapshot's header line: `14:03:12  session.121: 9 people in <room>`.
pub fn snapshot_header(channel: &str, snapshot: &Value) -> String {
    let count = snapshot["participants"].as_array().map_or(0, Vec::len);
    format!(
        "{}  {channel}: {count} {} in {}",
        local_time(snapshot["timestamp"].as_str()),
        if count == 1 { "person" } else { "people" },
        snapshot["room"].as_str().unwrap_or("?")
    )
}

/// `final: present 100.0 %`, `late so far 62.0 %`, `in meeting, 7.9 % so
/// far`, or `no schedule` while none is known.
pub fn verdict(attendance: &Value) -> String {
    let (Some(status), Some(pct)) = (
        attendance["attendance_status"].as_str(),
        attendance["attendance_percentage"].as_f64(),
    ) else {
        return "no schedule".to_string();
    };
    if attendance["is_final"].as_bool() == Some(true) {
        format!("final: {status} {pct:.1} %")
    } else if status == "absent" && attendance["is_currently_in_meeting"].as_bool() == Some(true) {
        format!("in meeting, {pct:.1} % so far")
    } else {
        format!("{status} so far {pct:.1} %")
    }
}

/// `h:mm:ss`; negative durations (never sent) show as zero.
pub fn hms(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `HH:MM:SS` in the local time zone, of `rfc3339` or else of now.
fn local_time(rfc3339: Option<&str>) -> String {
    let at = rfc3339
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or_else(Local::now, |t| t.with_timezone(&Local));
    at.format("%H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn person_json(status: Option<&str>, pct: Option<f64>, in_meeting: bool, fin: bool) -> Value {
        json!({
            "identity": "1_Ameer_Maher", "name": "Ameer Maher",
            "status": if in_meeting { "joined" } else { "left" },
            "is_currently_in_meeting": in_meeting,
            "duration_ms": 3_723_999,
            "attendance_status": status, "attendance_percentage": pct,
            "is_final": fin,
        })
    }

    #[test]
    fn a_line_has_name_status_time_and_the_verdict_so_far() {
        let line = person(
            &person_json(Some("present"), Some(82.5), true, false),
            Some("2025-11-21T10:00:00Z"),
        );
        assert!(line.contains("Ameer Maher"), "{line}");
        assert!(line.contains(" joined "), "{line}");
        assert!(line.contains(" 1:02:03 "), "{line}");
        assert!(line.ends_with("present so far 82.5 %"), "{line}");
        let time = &line[..8];
        assert!(
            time.chars().filter(|c| *c == ':').count() == 2 && time.len() == 8,
            "{line}"
        );
    }

    #[test]
    fn verdicts_are_so_far_until_final_and_never_absent_in_the_meeting() {
        let v = |s, p, m, f| verdict(&person_json(s, p, m, f));
        assert_eq!(
            v(Some("present"), Some(100.0), false, true),
            "final: present 100.0 %"
        );
        assert_eq!(
            v(Some("late"), Some(62.0), false, false),
            "late so far 62.0 %"
        );
        assert_eq!(
            v(Some("absent"), Some(7.9), true, false),
            "in meeting, 7.9 % so far"
        );
        assert_eq!(
            v(Some("absent"), Some(0.0), false, false),
            "absent so far 0.0 %"
        );
        assert_eq!(
            v(Some("absent"), Some(0.0), false, true),
            "final: absent 0.0 %"
        );
        assert_eq!(v(None, None, true, false), "no schedule");
    }

    #[test]
    fn names_fall_back_to_the_identity_and_headers_count_people() {
        let line = person(&json!({"identity": "7_X", "status": "left"}), None);
        assert!(line.contains("7_X") && line.contains("0:00:00"), "{line}");
        let header = snapshot_header(
            "session.121",
            &json!({"room": "r", "participants": [{}, {}], "timestamp": "2025-11-21T10:00:00Z"}),
        );
        assert!(header.ends_with("session.121: 2 people in r"), "{header}");
        assert_eq!(hms(-5), "0:00:00");
        assert_eq!(hms(36_000_000), "10:00:00");
    }
}
