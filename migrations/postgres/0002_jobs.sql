-- The outbox. A job is inserted in the same transaction as the business
-- change that needs it; workers lease it, do the work outside any
-- transaction, then record the outcome. Times are Unix epoch milliseconds.
create table jobs (
    id           bigint generated always as identity primary key,
    kind         text    not null,
    payload      text    not null,                 -- JSON
    dedupe_key   text    constraint jobs_dedupe_key unique, -- enqueueing a key twice is a no-op
    state        text    not null default 'queued'
                 check (state in ('queued', 'running', 'done', 'dead')),
    attempts     integer not null default 0,       -- attempts started (leases taken)
    max_attempts integer not null,
    run_at       bigint  not null,                 -- not before
    locked_until bigint,                           -- lease; expired = claimable again
    locked_by    text,
    last_error   text,
    created_at   bigint  not null,
    updated_at   bigint  not null,
    finished_at  bigint
);

-- The claim scan: queued jobs that are due, oldest first. Expired leases are
-- requeued by a separate statement so that this stays one range scan.
create index jobs_claimable on jobs (state, run_at, id);
create index jobs_dead_by_time on jobs (state, finished_at);

-- Every attempt with its outcome: 'done', 'retry', 'dead', 'lease_expired';
-- null while running (the one open row per job). A redrive starts counting
-- at 1 again, so numbers repeat across runs; `id` orders the history.
create table job_attempts (
    id          bigint generated always as identity primary key,
    job_id      bigint  not null references jobs (id) on delete cascade,
    attempt     integer not null,
    worker      text    not null,
    started_at  bigint  not null,
    finished_at bigint,
    outcome     text,
    error       text,
    duration_ms bigint
);
create index job_attempts_by_job on job_attempts (job_id, attempt);
