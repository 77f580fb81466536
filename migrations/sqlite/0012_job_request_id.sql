-- The request a job serves: the `x-request-id` of the request that enqueued
-- it (null for jobs of no request: timers, the command line). The worker
-- names it on the attempt's log lines, so that one id follows an order
-- from its webhook to its key email, whichever process sends it.
alter table jobs add column request_id text;
