-- Each version of a job's row (queued, running, done: three in a job's
-- life) gets an entry in every index it falls in, and none of these
-- indexes lets an update be HOT: `state` is in all of them. Most of those
-- entries were never read: the claim reads queued jobs only, the lease
-- expiry running ones, retention and the dead-letter list finished ones,
-- the stats unfinished ones. Each index now holds only the versions its
-- readers look for, one entry per job instead of three.
drop index jobs_claimable;
create index jobs_claimable on jobs (priority, run_at, id) where state = 'queued';

-- Expired leases (`jobs::store::expire_leases`), which the claim index
-- used to find as well.
create index jobs_leased on jobs (locked_until) where state = 'running';

drop index jobs_dead_by_time;
create index jobs_finished on jobs (state, finished_at) where state in ('done', 'dead');

drop index jobs_state_kind;
create index jobs_state_kind on jobs (state, kind) where state in ('queued', 'running', 'dead');

-- Since this migration `job_attempts` rows are written once, when the
-- attempt ends (src/jobs/attempts.rs): none has a null outcome, whatever
-- the comment of 0002 says.
