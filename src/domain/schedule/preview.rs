//! Previews: the next fire times of a schedule, for users to check it before they use it.

use chrono::{DateTime, Duration, Utc};

use super::{
    Schedule,
    cron::{DstShift, FireTime},
};

/// Most fire times one preview lists.
pub const MAX_PREVIEW: usize = 100;

/// The next fire times of a schedule, for users to check it before they use it.
#[derive(Debug, Clone)]
pub struct Preview {
    /// The schedule previewed, anchored at the preview's start.
    pub schedule: Schedule,
    /// Its next fires, earliest first.
    pub times: Vec<FireTime>,
}

impl Preview {
    /// Up to `count` fires of `schedule` after `from`.
    pub fn new(schedule: Schedule, from: DateTime<Utc>, count: usize) -> Self {
        let schedule = schedule.anchored(from);
        let mut times = Vec::with_capacity(count);
        let mut after = from - Duration::milliseconds(1);
        if let Schedule::RunAt(at) = schedule {
            times.push(FireTime {
                at,
                local: at.naive_utc(),
                shift: DstShift::None,
            });
        }
        while times.len() < count {
            let Some(fire) = schedule.next_fire_after(after) else {
                break;
            };
            after = fire.at;
            times.push(fire);
        }
        Self { schedule, times }
    }

    /// An instant on the schedule's wall clock, RFC 3339 with its offset.
    pub fn local_time(&self, at: DateTime<Utc>) -> String {
        match &self.schedule {
            Schedule::Cron(cron) => at
                .with_timezone(&cron.zone())
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            _ => at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}
