//! On-call schedules: people taking turns in a daily or weekly rotation from
//! a first handover, in a time zone, with overrides that win over the
//! rotation for their span. Pure: who is on call at an instant, and who next.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ToSpan, Zoned};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    Daily,
    Weekly,
}

/// Someone covering a span instead of the rotation.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub person: String,
    pub from: Timestamp,
    pub to: Timestamp,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub rotation: Rotation,
    /// Principal names, in turn order; the first takes the shift starting at `handover`.
    pub people: Vec<String>,
    /// A shift change, as a local date-time in `tz`: every rotation step after it changes too.
    pub handover: DateTime,
    pub tz: TimeZone,
    pub overrides: Vec<Override>,
}

/// Who holds a shift, and from when to when.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    pub person: String,
    pub from: Timestamp,
    pub to: Timestamp,
}

impl Schedule {
    fn step(&self) -> Span {
        match self.rotation {
            Rotation::Daily => 1.day(),
            Rotation::Weekly => 1.week(),
        }
    }

    /// The rotation's shift around `at`, ignoring overrides. Steps are taken
    /// in local calendar days, so a shift starts at the same wall-clock time
    /// across daylight-saving changes.
    fn rotation_shift(&self, at: Timestamp) -> Option<Shift> {
        if self.people.is_empty() {
            return None;
        }
        let start = self.handover.to_zoned(self.tz.clone()).ok()?;
        let step_days: i64 = match self.rotation {
            Rotation::Daily => 1,
            Rotation::Weekly => 7,
        };
        let local = at.to_zoned(self.tz.clone());
        // A first guess from whole days, corrected by at most one step either way.
        let days = (local.date() - start.date()).get_days() as i64;
        let mut n = days.div_euclid(step_days);
        let begin = |n: i64| -> Option<Zoned> { start.checked_add(self.step().checked_mul(n).ok()?).ok() };
        while begin(n)?.timestamp() > at {
            n -= 1;
        }
        while begin(n + 1)?.timestamp() <= at {
            n += 1;
        }
        let person = self.people[n.rem_euclid(self.people.len() as i64) as usize].clone();
        Some(Shift { person, from: begin(n)?.timestamp(), to: begin(n + 1)?.timestamp() })
    }

    /// Who is on call at `at`: an override covering it, else the rotation.
    pub fn on_call(&self, at: Timestamp) -> Option<Shift> {
        if let Some(o) = self.overrides.iter().find(|o| o.from <= at && at < o.to) {
            return Some(Shift { person: o.person.clone(), from: o.from, to: o.to });
        }
        let mut shift = self.rotation_shift(at)?;
        // An override starting during the shift ends it early; one ending in it starts it late.
        for o in &self.overrides {
            if o.from > at && o.from < shift.to {
                shift.to = o.from;
            }
            if o.to <= at && o.to > shift.from {
                shift.from = o.to;
            }
        }
        Some(shift)
    }

    /// The shift after the one at `at` with a different person (the next to call when the first does not answer).
    pub fn next(&self, at: Timestamp) -> Option<Shift> {
        let now = self.on_call(at)?;
        let mut probe = now.to;
        // Bounded: a rotation with one person has no one else.
        for _ in 0..(self.people.len() + self.overrides.len() + 2) {
            let shift = self.on_call(probe)?;
            if shift.person != now.person {
                return Some(shift);
            }
            probe = shift.to;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn schedule(rotation: Rotation, overrides: Vec<Override>) -> Schedule {
        Schedule {
            name: "primary".into(),
            rotation,
            people: vec!["alice".into(), "bob".into(), "carol".into()],
            // Mondays 09:00 in Shanghai (01:00Z).
            handover: "2026-11-02T09:00:00".parse().unwrap(),
            tz: TimeZone::get("Asia/Shanghai").unwrap(),
            overrides,
        }
    }

    #[test]
    fn weekly_rotation_turns_at_the_local_handover() {
        let s = schedule(Rotation::Weekly, vec![]);
        let at = |t: &str| s.on_call(ts(t)).unwrap();
        assert_eq!(at("2026-11-02T01:00:00Z").person, "alice");
        assert_eq!(at("2026-11-09T00:59:59Z").person, "alice");
        assert_eq!(at("2026-11-09T01:00:00Z").person, "bob");
        assert_eq!(at("2026-11-16T01:00:00Z").person, "carol");
        assert_eq!(at("2026-11-23T01:00:00Z").person, "alice");
        // Before the first handover the rotation runs backwards.
        assert_eq!(at("2026-11-01T12:00:00Z").person, "carol");
        let shift = at("2026-11-22T12:00:00Z");
        assert_eq!((shift.from, shift.to), (ts("2026-11-16T01:00:00Z"), ts("2026-11-23T01:00:00Z")));
        assert_eq!(s.next(ts("2026-11-22T12:00:00Z")).unwrap().person, "alice");
    }

    #[test]
    fn daily_rotation_keeps_wall_clock_time_across_dst() {
        let mut s = schedule(Rotation::Daily, vec![]);
        s.tz = TimeZone::get("Europe/Berlin").unwrap();
        s.handover = "2026-10-24T09:00:00".parse().unwrap();
        // DST ends on 2026-10-25: 09:00 Berlin is 07:00Z before, 08:00Z after.
        assert_eq!(s.on_call(ts("2026-10-24T07:00:00Z")).unwrap().person, "alice");
        assert_eq!(s.on_call(ts("2026-10-25T07:30:00Z")).unwrap().person, "alice", "08:30 local, before 09:00");
        assert_eq!(s.on_call(ts("2026-10-25T08:00:00Z")).unwrap().person, "bob");
        let shift = s.on_call(ts("2026-10-25T12:00:00Z")).unwrap();
        assert_eq!((shift.from, shift.to), (ts("2026-10-25T08:00:00Z"), ts("2026-10-26T08:00:00Z")));
    }

    #[test]
    fn overrides_win_for_their_span_and_cut_the_shifts_around_them() {
        let o = Override { person: "dave".into(), from: ts("2026-11-18T01:00:00Z"), to: ts("2026-11-19T01:00:00Z") };
        let s = schedule(Rotation::Weekly, vec![o]);
        assert_eq!(s.on_call(ts("2026-11-18T12:00:00Z")).unwrap().person, "dave");
        let before = s.on_call(ts("2026-11-17T12:00:00Z")).unwrap();
        assert_eq!((before.person.as_str(), before.to), ("carol", ts("2026-11-18T01:00:00Z")));
        let after = s.on_call(ts("2026-11-20T12:00:00Z")).unwrap();
        assert_eq!((after.person.as_str(), after.from), ("carol", ts("2026-11-19T01:00:00Z")));
        assert_eq!(s.next(ts("2026-11-17T12:00:00Z")).unwrap().person, "dave");
        assert_eq!(s.next(ts("2026-11-18T12:00:00Z")).unwrap().person, "carol");
    }

    #[test]
    fn one_person_has_no_next() {
        let mut s = schedule(Rotation::Daily, vec![]);
        s.people = vec!["alice".into()];
        assert_eq!(s.on_call(ts("2026-11-22T00:00:00Z")).unwrap().person, "alice");
        assert!(s.next(ts("2026-11-22T00:00:00Z")).is_none());
    }
}
