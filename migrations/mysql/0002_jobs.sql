-- The outbox. A job is inserted in the same transaction as the business
-- change that needs it; workers lease it, do the work outside any
-- transaction, then record the outcome. Times are Unix epoch milliseconds.
create table jobs (
    id           bigint       not null auto_increment primary key,
    kind         varchar(64)  not null,
    payload      mediumtext   not null,            -- JSON
    dedupe_key   varchar(255),                     -- enqueueing a key twice is a no-op
    state        varchar(16)  not null default 'queued',
    attempts     int          not null default 0,  -- attempts started (leases taken)
    max_attempts int          not null,
    run_at       bigint       not null,            -- not before
    locked_until bigint,                           -- lease; expired = claimable again
    locked_by    varchar(255),
    last_error   text,
    created_at   bigint       not null,
    updated_at   bigint       not null,
    finished_at  bigint,
    unique key jobs_dedupe_key (dedupe_key),
    -- The claim scan: queued jobs that are due, oldest first. SKIP LOCKED
    -- only skips rows when an index serves the scan; without this index the
    -- first claimer would lock every row it reads.
    key jobs_claimable (state, run_at, id),
    key jobs_dead_by_time (state, finished_at),
    constraint jobs_state_known check (state in ('queued', 'running', 'done', 'dead'))
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;

-- Every attempt with its outcome: 'done', 'retry', 'dead', 'lease_expired';
-- null while running (the one open row per job). A redrive starts counting
-- at 1 again, so numbers repeat across runs; `id` orders the history.
create table job_attempts (
    id          bigint      not null auto_increment primary key,
    job_id      bigint      not null,
    attempt     int         not null,
    worker      varchar(255) not null,
    started_at  bigint      not null,
    finished_at bigint,
    outcome     varchar(16),
    error       text,
    duration_ms bigint,
    key job_attempts_by_job (job_id, attempt),
    constraint job_attempts_job_fk foreign key (job_id) references jobs (id) on delete cascade
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;
