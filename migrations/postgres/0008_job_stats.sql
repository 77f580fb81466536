-- What `/v1/stats` reads instead of scanning the outbox: attempts that
-- finished, per minute, job kind, outcome and latency bucket (enqueue to
-- finish), rolled up from `job_attempts` once a minute is over. The minutes
-- not rolled up yet are counted live. Times are Unix epoch milliseconds.
create table job_stats (
    minute  bigint  not null,   -- start of the minute the attempts finished in
    kind    text    not null,
    outcome text    not null,   -- 'done' | 'retry' | 'dead'
    bucket  integer not null,   -- latency bucket, see src/jobs/rollup.rs
    count   bigint  not null,
    primary key (minute, kind, outcome, bucket)
);

-- How far the roll-up got: every attempt that finished before
-- `rolled_until` is counted in `job_stats`.
create table job_stats_progress (
    id           integer primary key,
    rolled_until bigint  not null
);
insert into job_stats_progress (id, rolled_until) values (1, 0);

-- The roll-up and the retention pruning read attempts by when they ended.
create index job_attempts_finished on job_attempts (finished_at);
