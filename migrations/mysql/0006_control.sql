-- The control channel. Every `allot serve` and `allot worker` keeps a row in
-- `processes` up to date (heartbeat); `allot ctl` writes a command and one
-- pending reply row per target, each target answers in its own row. The
-- tables are the record of who was told what, when, and what they said.
-- Times are Unix epoch milliseconds.
create table processes (
    id             varchar(255) not null primary key,          -- host:pid:random, also the lease owner of its jobs
    host           varchar(255) not null,
    pid            bigint  not null,
    version        varchar(64) not null,
    role           varchar(16) not null,             -- 'serve' | 'worker'
    state          varchar(16) not null,             -- 'ready' | 'unready' | 'stopping' | 'stopped'
    started_at     bigint  not null,
    heartbeat_at   bigint  not null,             -- last sign of life
    heartbeat_ms   bigint  not null,             -- its interval: silent for three = gone
    stopped_at     bigint,
    jobs_in_flight bigint  not null default 0,
    jobs_done      bigint  not null default 0,
    last_error     text
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;

create table control_commands (
    id         bigint       not null auto_increment primary key,
    message    mediumtext not null,                -- the command as sent, JSON, size-capped
    target     varchar(1024) not null,                  -- as the operator wrote it: all, role=…, host=…, ids
    sent_by    text   not null,
    sent_at    bigint not null,
    expires_at bigint not null,                  -- a target that sees it later skips it
    error      text                              -- refused before sending (malformed, no target)
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;
create index control_commands_by_time on control_commands (sent_at);

create table control_replies (
    command_id  bigint not null,
    process_id  varchar(255) not null,
    status      varchar(16) not null default 'pending', -- pending | running | ok | refused | error | expired | cancelled
    reply       text,                                -- JSON
    started_at  bigint,
    answered_at bigint,
    primary key (command_id, process_id),
    constraint control_replies_command_fk foreign key (command_id) references control_commands (id) on delete cascade
) engine = InnoDB default charset = utf8mb4 collate = utf8mb4_bin;
-- What a process polls for: its own pending commands.
create index control_replies_inbox on control_replies (process_id, status);
