//! Cron expressions: the syntax Warren accepts, checked field by field so
//! that each problem names its field, then handed to croner in a canonical
//! numeric form (six fields, names replaced by numbers) for the search.
//!
//! croner is lenient where a wire contract should not be (it replaces
//! `MON` anywhere in the string, takes a seventh year field, Quartz's `L`,
//! `W`, `#` and `?`); checking the grammar here first keeps what is
//! accepted exactly what `docs/protocol.md` lists, and leaves room to add
//! more later without breaking anyone.

use croner::parser::{CronParser, Seconds, Year};
use croner::{Cron, Weekday};

/// Longest cron expression accepted (bytes), checked before anything else.
pub const MAX_CRON_LEN: usize = 256;

/// croner's bit for a plain value of a field (its `ALL_BIT`).
const PLAIN_VALUE: u8 = 1;

/// One field of an expression: its name in messages and its values.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Three-letter names and their numbers (months, weekdays).
    names: &'static [(&'static str, u32)],
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("JAN", 1),
    ("FEB", 2),
    ("MAR", 3),
    ("APR", 4),
    ("MAY", 5),
    ("JUN", 6),
    ("JUL", 7),
    ("AUG", 8),
    ("SEP", 9),
    ("OCT", 10),
    ("NOV", 11),
    ("DEC", 12),
];

const DAY_NAMES: &[(&str, u32)] = &[
    ("SUN", 0),
    ("MON", 1),
    ("TUE", 2),
    ("WED", 3),
    ("THU", 4),
    ("FRI", 5),
    ("SAT", 6),
];

/// The six fields in order (a five-field expression has no seconds).
const FIELDS: [Field; 6] = [
    Field {
        name: "second",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "minute",
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
        names: MONTH_NAMES,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
        names: DAY_NAMES,
    },
];

/// The macros accepted, and what each stands for.
const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

/// A checked cron expression, ready to be searched on a wall clock.
#[derive(Debug, Clone)]
pub(super) struct CronExpr {
    /// The parsed pattern (croner), searched as a naive wall clock.
    pub(super) cron: Cron,
    /// The hour field holds `*` or a step: the schedule follows elapsed
    /// time across a daylight saving change (see the module docs).
    pub(super) periodic: bool,
    /// Which seconds, minutes and hours of a day match.
    second: [bool; 60],
    minute: [bool; 60],
    hour: [bool; 24],
    /// Matching times of day before each second/minute/hour index
    /// (prefix sums; index 60 or 24 is the whole unit).
    seconds_before: [u32; 61],
    minutes_before: [u32; 61],
    hours_before: [u32; 25],
}

impl CronExpr {
    /// Checks `expr` and parses it; the error is a message for the user.
    pub(super) fn parse(expr: &str) -> Result<CronExpr, String> {
        let canonical = canonical(expr)?;
        let fields: Vec<&str> = canonical.split(' ').collect();
        // Vixie cron: when either day field starts with `*`, a day must
        // match both (a `*` matches every day); otherwise either.
        let both_days = fields[3].starts_with('*') || fields[5].starts_with('*');
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Disallowed)
            .dom_and_dow(both_days)
            .build()
            .parse(&canonical)
            .map_err(|e| format!("is not a valid cron expression ({e})"))?;
        let parsed = CronExpr::from_cron(cron, fields[2])?;
        if both_days && !parsed.some_day_exists() {
            return Err(format!(
                "never fires: no month it names has the day-of-month `{}`",
                fields[3]
            ));
        }
        Ok(parsed)
    }

    fn from_cron(cron: Cron, hour_field: &str) -> Result<CronExpr, String> {
        let broken = |e| format!("is not a valid cron expression ({e})");
        let mut second = [false; 60];
        let mut minute = [false; 60];
        let mut hour = [false; 24];
        for (i, s) in second.iter_mut().enumerate() {
            *s = cron.pattern.second_match(i as u32).map_err(broken)?;
        }
        for (i, m) in minute.iter_mut().enumerate() {
            *m = cron.pattern.minute_match(i as u32).map_err(broken)?;
        }
        for (i, h) in hour.iter_mut().enumerate() {
            *h = cron.pattern.hour_match(i as u32).map_err(broken)?;
        }
        Ok(CronExpr {
            cron,
            periodic: hour_field.contains(['*', '/']),
            seconds_before: prefix(&second),
            minutes_before: prefix(&minute),
            hours_before: prefix(&hour),
            second,
            minute,
            hour,
        })
    }

    /// Whether some month named has some day-of-month named (February
    /// counting its leap day): when both day fields must match, that is
    /// whether the expression ever fires at all.
    fn some_day_exists(&self) -> bool {
        let pattern = &self.cron.pattern;
        (1..=12u32).any(|month| {
            pattern.month_match(month).unwrap_or(false)
                && (1..=days_in_month(2000, month)).any(|day| {
                    pattern
                        .days
                        .is_bit_set(day as u16, PLAIN_VALUE)
                        .unwrap_or(false)
                })
        })
    }

    /// Whether the date matches (month, and the day fields).
    pub(super) fn date_matches(&self, date: chrono::NaiveDate) -> bool {
        use chrono::Datelike;
        let weekday = Weekday::from_days_from_sunday(date.weekday().num_days_from_sunday());
        let pattern = &self.cron.pattern;
        pattern.month_match(date.month()).unwrap_or(false)
            && pattern
                .day_match(date.year(), date.month(), date.day(), weekday)
                .unwrap_or(false)
    }

    /// Whether the time of day (seconds since midnight) matches.
    pub(super) fn time_matches(&self, tod: u32) -> bool {
        let (h, m, s) = (
            (tod / 3600) as usize,
            (tod / 60 % 60) as usize,
            (tod % 60) as usize,
        );
        h < 24 && self.hour[h] && self.minute[m] && self.second[s]
    }

    /// How many matching times of day lie before `tod` (0 to 86,400).
    pub(super) fn times_before(&self, tod: u32) -> u64 {
        let per_minute = u64::from(self.seconds_before[60]);
        let per_hour = u64::from(self.minutes_before[60]) * per_minute;
        let h = (tod / 3600).min(24) as usize;
        let mut n = u64::from(self.hours_before[h]) * per_hour;
        if h < 24 && self.hour[h] {
            let m = (tod / 60 % 60) as usize;
            n += u64::from(self.minutes_before[m]) * per_minute;
            if self.minute[m] {
                n += u64::from(self.seconds_before[(tod % 60) as usize]);
            }
        }
        n
    }
}

/// Prefix sums of a bit set: entry `i` counts the set bits before `i`.
fn prefix<const N: usize, const M: usize>(bits: &[bool; N]) -> [u32; M] {
    let mut out = [0; M];
    for i in 0..N {
        out[i + 1] = out[i] + u32::from(bits[i]);
    }
    out
}

pub(super) fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The expression in six numeric fields separated by single spaces, or
/// what is wrong with it (every field's first problem, joined).
fn canonical(expr: &str) -> Result<String, String> {
    if expr.len() > MAX_CRON_LEN {
        return Err(format!(
            "is {} bytes long; at most {MAX_CRON_LEN} are accepted",
            expr.len()
        ));
    }
    if !expr.is_ascii() {
        return Err("holds a character that is not ASCII".into());
    }
    let expr = expr.trim();
    let expanded = if expr.starts_with('@') {
        match MACROS.iter().find(|(m, _)| m.eq_ignore_ascii_case(expr)) {
            Some((_, fields)) => *fields,
            None => {
                let known: Vec<&str> = MACROS.iter().map(|(m, _)| *m).collect();
                return Err(format!(
                    "uses an unknown macro; accepted are {} (for a fixed interval, \
                     use `every_ms` instead of `cron`)",
                    known.join(", ")
                ));
            }
        }
    } else {
        expr
    };
    let mut fields: Vec<&str> = expanded.split_ascii_whitespace().collect();
    match fields.len() {
        5 => fields.insert(0, "0"),
        6 => {}
        n => {
            return Err(format!(
                "has {n} fields; give 5 (minute hour day-of-month month day-of-week) \
                 or 6 (a leading second, then those five)"
            ));
        }
    }
    let mut out = Vec::with_capacity(6);
    let mut problems = Vec::new();
    for (text, field) in fields.iter().zip(&FIELDS) {
        match canonical_field(text, field) {
            Ok(c) => out.push(c),
            Err(p) => problems.push(format!("{} field `{text}`: {p}", field.name)),
        }
    }
    if problems.is_empty() {
        Ok(out.join(" "))
    } else {
        Err(problems.join("; "))
    }
}

/// One field, checked and with names replaced by numbers.
fn canonical_field(text: &str, field: &Field) -> Result<String, String> {
    let mut items = Vec::new();
    for item in text.split(',') {
        items.push(canonical_item(item, field)?);
    }
    Ok(items.join(","))
}

/// One list item: `*`, `*/step`, `v`, `a-b` or `a-b/step`.
fn canonical_item(item: &str, field: &Field) -> Result<String, String> {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => (base, Some(step)),
        None => (item, None),
    };
    let span = field.max - field.min + 1;
    let step = match step {
        None => None,
        Some(s) => match number(s) {
            Some(n) if (1..=span).contains(&n) => Some(n),
            _ => return Err(format!("the step `{s}` must be a number from 1 to {span}")),
        },
    };
    let base = if base == "*" {
        "*".to_owned()
    } else if let Some((a, b)) = base.split_once('-') {
        let (a, mut b) = (value(a, field)?, value(b, field)?);
        if field.max == 7 && b == 0 && a > 0 {
            // A weekday range may end on Sunday as 0 (`FRI-SUN`).
            b = 7;
        }
        if a > b {
            return Err(format!("the range {a}-{b} runs backwards"));
        }
        format!("{a}-{b}")
    } else {
        if step.is_some() {
            return Err("a step follows `*` or a range (`*/15`, `0-30/5`)".into());
        }
        value(base, field)?.to_string()
    };
    Ok(match step {
        Some(n) => format!("{base}/{n}"),
        None => base,
    })
}

/// A number or (in the month and weekday fields) a three-letter name.
fn value(text: &str, field: &Field) -> Result<u32, String> {
    if let Some(n) = number(text) {
        if (field.min..=field.max).contains(&n) {
            return Ok(n);
        }
        return Err(format!(
            "{n} is out of range ({} to {})",
            field.min, field.max
        ));
    }
    match field
        .names
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(text))
    {
        Some((_, n)) => Ok(*n),
        None if field.names.is_empty() => Err(format!(
            "`{text}` is not a number from {} to {}",
            field.min, field.max
        )),
        None => Err(format!(
            "`{text}` is neither a number from {} to {} nor a name ({}, ...)",
            field.min,
            field.max,
            field.names[..3]
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A decimal number of at most four digits.
fn number(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
