-- /v1/stats at any size: the day window sums hours, not 1440 minutes.
-- Complete hours of `job_stats` are summed into `job_stats_hourly` by the
-- same roll-up; the partial hours at either end of a window are read from
-- the minutes. Times are Unix epoch milliseconds.
create table job_stats_hourly (
    hour    bigint  not null,   -- start of the hour the attempts finished in
    kind    text  not null,
    outcome text  not null,   -- 'done' | 'retry' | 'dead'
    bucket  integer not null,   -- latency bucket, see src/jobs/rollup.rs
    count   bigint  not null,
    primary key (hour, kind, outcome, bucket)
);

-- Every minute before `hours_rolled_until` is summed into its hour.
alter table job_stats_progress add column hours_rolled_until bigint not null default 0;

-- Unfinished jobs per state and kind, counted from the index alone (the
-- claim index would need a row lookup per job for its kind).
create index jobs_state_kind on jobs (state, kind);
