//! Holds on open runs: a pulling worker (or the webhook caller) takes the runs offered to it,
//! and nobody else is offered them until the hold lapses; then they are offered again, with
//! the same run ids. A hold changes nothing else of the job: no event, no status, no update
//! time, only its version, so that two takers cannot both write theirs.

use chrono::{DateTime, Utc};

use super::Job;
use crate::domain::{
    delivery::{Delivery, RunLease},
    ids::RunId,
    run::Run,
};

impl Job {
    /// The job with up to `max` of its open runs that go by `delivery` and that nobody holds
    /// at `now` held by `holder` until `until`, oldest first, and those runs as held; `None`
    /// when it has none to offer.
    pub fn lease_runs(
        &self,
        delivery: Delivery,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        holder: Option<&str>,
        max: usize,
    ) -> Option<(Job, Vec<Run>)> {
        let mut next = self.clone();
        let mut taken = Vec::new();
        for run in next
            .open_runs
            .iter_mut()
            .filter(|run| run.offered(delivery, now))
            .take(max)
        {
            run.lease = Some(RunLease {
                holder: holder.map(str::to_owned),
                until,
            });
            taken.push(run.clone());
        }
        if taken.is_empty() {
            return None;
        }
        next.version += 1;
        Some((next, taken))
    }

    /// The job with its open run `run_id` held until `until` (a webhook target took it and
    /// reports later): offered to nobody before its deadline times it out. `None` when the run
    /// is not open.
    pub fn hold_run(&self, run_id: RunId, until: DateTime<Utc>) -> Option<Job> {
        let mut next = self.clone();
        let run = next.open_runs.iter_mut().find(|run| run.run_id == run_id)?;
        let holder = run.lease.as_ref().and_then(|lease| lease.holder.clone());
        run.lease = Some(RunLease { holder, until });
        next.version += 1;
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::domain::{
        job::fixtures::{at, job},
        job::lifecycle::Limits,
        schedule::Schedule,
    };

    /// A job whose first run fired at 09:00 and goes by `delivery`.
    fn fired(delivery: Delivery) -> Job {
        let limits = Limits {
            default_delivery: delivery,
            ..Limits::default()
        };
        job(
            Schedule::RunAt(at("2030-01-01T09:00:00Z")),
            "2030-01-01T08:00:00Z",
        )
        .settle(at("2030-01-01T09:00:00Z"), &limits, 0.5)
        .job
    }

    #[test]
    fn a_run_is_held_by_one_taker_until_its_hold_lapses_then_offered_again_as_the_same_run() {
        let job = fired(Delivery::Pull);
        let now = at("2030-01-01T09:00:01Z");
        let until = now + Duration::seconds(60);
        assert_eq!(job.offered_at(Delivery::Pull), job.open_runs[0].fired_at);
        assert_eq!(job.offered_at(Delivery::Webhook), None);
        assert!(
            job.lease_runs(Delivery::Webhook, now, until, None, 10)
                .is_none()
        );

        let (held, runs) = job
            .lease_runs(Delivery::Pull, now, until, Some("worker-a"), 10)
            .unwrap();
        assert_eq!(held.version, job.version + 1);
        assert_eq!((held.updated_at, held.status), (job.updated_at, job.status));
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].run_id, job.open_runs[0].run_id);
        assert_eq!(held.offered_at(Delivery::Pull), Some(until));
        assert!(
            held.lease_runs(Delivery::Pull, now, until, Some("worker-b"), 10)
                .is_none(),
            "held: offered to nobody else"
        );
        let (_, again) = held
            .lease_runs(
                Delivery::Pull,
                until,
                until + Duration::seconds(60),
                None,
                10,
            )
            .expect("offered again once the hold lapsed");
        assert_eq!(again[0].run_id, runs[0].run_id);
    }

    #[test]
    fn a_run_accepted_for_later_is_held_to_the_time_given() {
        let job = fired(Delivery::Webhook);
        let run = job.open_runs[0].run_id;
        let later = at("2030-01-01T10:00:00Z");
        let held = job.hold_run(run, later).unwrap();
        assert_eq!(held.offered_at(Delivery::Webhook), Some(later));
        assert!(
            job.hold_run(RunId::derive(job.id, later, 1, 0), later)
                .is_none()
        );
    }
}
