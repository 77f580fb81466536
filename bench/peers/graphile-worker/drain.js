// graphile-worker draining no-op jobs on PostgreSQL, batched as its
// performance guide describes (local queue, completions batched with no
// delay): the peer `allot bench jobs` is compared with in the same run.
//
//   node drain.js DATABASE_URL [JOBS] [CONCURRENCY] [LOCAL_QUEUE]
//
// Enqueues JOBS jobs in one statement (not timed), then times the worker
// from its start until the jobs table is empty (graphile-worker deletes a
// job when it completes). Prints one JSON object.
const { Logger, run, quickAddJob } = require("graphile-worker");
const { Pool } = require("pg");

async function main() {
  const [url, jobsArg, concurrencyArg, localQueueArg] = process.argv.slice(2);
  if (!url) throw new Error("usage: node drain.js DATABASE_URL [JOBS] [CONCURRENCY] [LOCAL_QUEUE]");
  const jobs = Number(jobsArg || 50000);
  const concurrency = Number(concurrencyArg || 32);
  const localQueue = Number(localQueueArg || 500);
  const pool = new Pool({ connectionString: url, max: concurrency + 2 });
  // Batched as graphile-worker's performance guide describes.
  const preset = {
    worker: {
      localQueue: { size: localQueue },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
    },
  };
  // Installs graphile-worker's schema the first time.
  await quickAddJob({ connectionString: url }, "noop", {});
  await pool.query("delete from graphile_worker._private_jobs");
  await pool.query(
    "select graphile_worker.add_job('noop', json_build_object('n', n)) from generate_series(1, $1) n",
    [jobs],
  );
  const started = process.hrtime.bigint();
  const runner = await run({
    connectionString: url,
    concurrency,
    pollInterval: 1000,
    preset,
    taskList: { noop: async () => {} },
    noHandleSignals: true,
    logger: new Logger(() => () => {}),
  });
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 50));
    const { rows } = await pool.query("select count(*)::int as left from graphile_worker._private_jobs");
    if (rows[0].left === 0) break;
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  await runner.stop();
  await pool.end();
  console.log(JSON.stringify({
    peer: "graphile-worker 0.17.3",
    jobs,
    concurrency,
    local_queue: localQueue,
    seconds,
    jobs_per_s: jobs / seconds,
  }));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
