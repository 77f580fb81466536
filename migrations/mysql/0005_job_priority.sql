-- Admin alerts jump the queue: workers lease due urgent jobs (priority 1)
-- before the rest (0), oldest first within each. The claim index leads with
-- the priority so that each of the two scans stays one range scan (which is
-- also what lets SKIP LOCKED skip rather than lock what it reads).
alter table jobs
    add column priority smallint not null default 0,
    drop index jobs_claimable,
    add index jobs_claimable (state, priority, run_at, id);
