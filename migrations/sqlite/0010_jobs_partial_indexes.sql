-- Each version of a job's row (queued, running, done) is entered in every
-- index that holds `state`. The claim reads queued jobs only and the lease
-- expiry running ones: their indexes now hold just those. (The finished and
-- per-kind indexes stay whole here: SQLite uses a partial index only when
-- the query repeats its condition term for term.)
drop index jobs_claimable;
create index jobs_claimable on jobs (priority, run_at, id) where state = 'queued';
create index jobs_leased on jobs (locked_until) where state = 'running';

-- Since this migration `job_attempts` rows are written once, when the
-- attempt ends (src/jobs/attempts.rs): none has a null outcome, whatever
-- the comment of 0002 says.
