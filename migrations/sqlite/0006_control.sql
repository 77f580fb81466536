-- The control channel. Every `allot serve` and `allot worker` keeps a row in
-- `processes` up to date (heartbeat); `allot ctl` writes a command and one
-- pending reply row per target, each target answers in its own row. The
-- tables are the record of who was told what, when, and what they said.
-- Times are Unix epoch milliseconds.
create table processes (
    id             text    primary key,          -- host:pid:random, also the lease owner of its jobs
    host           text    not null,
    pid            integer  not null,
    version        text    not null,
    role           text    not null,             -- 'serve' | 'worker'
    state          text    not null,             -- 'ready' | 'unready' | 'stopping' | 'stopped'
    started_at     integer  not null,
    heartbeat_at   integer  not null,             -- last sign of life
    heartbeat_ms   integer  not null,             -- its interval: silent for three = gone
    stopped_at     integer,
    jobs_in_flight integer  not null default 0,
    jobs_done      integer  not null default 0,
    last_error     text
);

create table control_commands (
    id         integer primary key autoincrement,
    message    text   not null,                  -- the command as sent, JSON, size-capped
    target     text   not null,                  -- as the operator wrote it: all, role=…, host=…, ids
    sent_by    text   not null,
    sent_at    integer not null,
    expires_at integer not null,                  -- a target that sees it later skips it
    error      text                              -- refused before sending (malformed, no target)
);
create index control_commands_by_time on control_commands (sent_at);

create table control_replies (
    command_id  integer not null references control_commands (id) on delete cascade,
    process_id  text   not null,
    status      text   not null default 'pending', -- pending | running | ok | refused | error | expired | cancelled
    reply       text,                                -- JSON
    started_at  integer,
    answered_at integer,
    primary key (command_id, process_id)
);
-- What a process polls for: its own pending commands.
create index control_replies_inbox on control_replies (process_id, status);
