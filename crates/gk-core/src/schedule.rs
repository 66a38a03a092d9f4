//! Cron schedules of plugin jobs: parsing only, shared by the manager (which refuses a
//! registration with a bad schedule) and the [`crate::Scheduler`] (which runs the jobs).

use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds};

/// Why a job's schedule cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule is empty (or only blanks).
    #[error("schedule is empty: give a cron expression of 5 or 6 fields")]
    Empty,
    /// The schedule is not a cron expression of 5 or 6 fields.
    #[error("schedule `{schedule}` is not a cron expression: {cause}")]
    NotCron {
        /// The schedule as written.
        schedule: String,
        /// What the cron parser said (part of the message, so not a `source`).
        cause: CronError,
    },
}

/// Parses a cron schedule (5 or 6 fields; the seconds field is optional).
pub fn parse_schedule(schedule: &str) -> Result<Cron, ScheduleError> {
    if schedule.trim().is_empty() {
        return Err(ScheduleError::Empty);
    }
    CronParser::builder()
        .seconds(Seconds::Optional)
        .build()
        .parse(schedule)
        .map_err(|cause| ScheduleError::NotCron {
            schedule: schedule.to_owned(),
            cause,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_or_six_fields() {
        for schedule in ["0 8 * * 1", "*/10 * * * * *"] {
            assert!(parse_schedule(schedule).is_ok(), "{schedule}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        for blank in ["", "  "] {
            let err = parse_schedule(blank).unwrap_err();
            assert!(matches!(err, ScheduleError::Empty), "{err:?}");
            assert_eq!(
                err.to_string(),
                "schedule is empty: give a cron expression of 5 or 6 fields"
            );
        }
        let err = parse_schedule("every tuesday").unwrap_err();
        assert!(
            matches!(&err, ScheduleError::NotCron { schedule, .. } if schedule == "every tuesday"),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("schedule `every tuesday` is not a cron expression: "),
            "{err}"
        );
    }
}
