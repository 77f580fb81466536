-- Admin alerts jump the queue: workers lease due urgent jobs (priority 1)
-- before the rest (0), oldest first within each. The claim index leads with
-- the priority so that each of the two scans stays one range scan.
alter table jobs add column priority integer not null default 0;
drop index jobs_claimable;
create index jobs_claimable on jobs (state, priority, run_at, id);
