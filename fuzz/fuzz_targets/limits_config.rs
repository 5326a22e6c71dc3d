//! The limit settings read from the environment and the origin check of a
//! WebSocket upgrade: `config::parse_rate` (`ROLLCALL_RATE_*`),
//! `limits::AllowedOrigins::parse` (`ROLLCALL_ALLOWED_ORIGINS`) and
//! `AllowedOrigins::allows` (the `Origin` header).
//!
//! Asserts: a rate is off only for `0` or a zero count, and a parsed one
//! has a count of at least 1 and at least 1 ns per request (so a non-zero
//! period); it reads back the same written as `<count>/<secs>s <nanos>ns` and as
//! `<count>/<humantime>`, padded with spaces. Every configured origin is
//! allowed as written, upper-cased, padded, and with trailing slashes; an
//! allowed origin is one of the configured ones on its own (the list is
//! their union), the relation is symmetric, and neither `null` nor the
//! empty origin is ever allowed.
//!
//! Input: `rate\0origins\0candidate-origin`.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rollcall::config::{Rate, parse_rate};
use rollcall::limits::AllowedOrigins;
use rollcall_fuzz::fields;

fuzz_target!(|data: &[u8]| {
    let [rate, origins, candidate] = fields::<3>(data);
    if let Ok(rate) = std::str::from_utf8(rate) {
        check_rate(rate);
    }
    let (Ok(origins), Ok(candidate)) =
        (std::str::from_utf8(origins), std::str::from_utf8(candidate))
    else {
        return;
    };
    check_origins(origins, candidate);
});

fn check_rate(text: &str) {
    match parse_rate(text) {
        Ok(None) => {
            let t = text.trim();
            let zero = t == "0"
                || t.split_once('/')
                    .is_some_and(|(count, _)| count.trim().parse::<u32>() == Ok(0));
            assert!(zero, "{text:?} turned a limit off");
        }
        Ok(Some(Rate { count, per })) => {
            assert!(count >= 1);
            assert!(per > Duration::ZERO);
            assert!(per.as_nanos() >= u128::from(count), "{count}/{per:?}");
            let same = Ok(Some(Rate { count, per }));
            let exact = format!("{count}/{}s {}ns", per.as_secs(), per.subsec_nanos());
            assert_eq!(parse_rate(&exact), same, "{exact}");
            let human = humantime::format_duration(per);
            assert_eq!(parse_rate(&format!(" {count} / {human} ")), same, "{human}");
        }
        Err(message) => assert!(!message.is_empty()),
    }
}

fn check_origins(text: &str, candidate: &str) {
    let Ok(allowed) = AllowedOrigins::parse(text) else {
        return;
    };
    let parts: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    for part in &parts {
        assert!(allowed.allows(part), "{part:?} configured but refused");
        assert!(allowed.allows(&part.to_ascii_uppercase()));
        assert!(allowed.allows(&format!(" {part}// ")));
        let single = AllowedOrigins::parse(part).expect("a part of a valid list");
        assert!(single.allows(part));
    }
    assert!(!allowed.allows("null") && !allowed.allows(""));
    let verdict = allowed.allows(candidate);
    let by_part = parts.iter().any(|part| {
        AllowedOrigins::parse(part)
            .expect("valid")
            .allows(candidate)
    });
    assert_eq!(verdict, by_part, "the list is not the union of its origins");
    if verdict {
        // Symmetric: the candidate, configured alone, allows what let it in.
        let own = AllowedOrigins::parse(candidate).expect("an allowed origin is an origin");
        assert!(parts.iter().any(|part| own.allows(part)), "{candidate:?}");
    }
}
