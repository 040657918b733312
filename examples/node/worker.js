'use strict';
// A worker_thread that keeps its own bridge busy with everything the addon
// does, so that terminating it exercises the teardown with all of it in
// flight: pool jobs, a burst of no-ops, an endless iterator, a sync_await
// on promises that settle on timers, an endless channel, and a sync_await on
// a promise that never settles. workerData.mode 'exit' ends it with process.exit().
const { parentPort, workerData } = require('node:worker_threads');
const u = require('./index.js');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const ignore = () => {};
const mode = (workerData && workerData.mode) || 'busy';

function stream(ms) {
  u.run(1000, ms).then(() => stream(ms), ignore);
}
for (let i = 1; i <= 4; i++) stream(i);
for (let i = 0; i < 200; i++) u.noop().catch(ignore);

(async () => {
  for await (const x of u.iterate(-1, { maxSize: 4, highWaterMark: 2 })) {
    if (x % 10 === 0) await sleep(1);
  }
})().catch(ignore);

u.syncAwait(1000, (i) => new Promise((resolve) => setTimeout(resolve, 1, i))).catch(ignore);
u.ticker(-1, 1, ignore);

// 'ready' once the loop function of this await runs: from then on the
// bridge's close waits for its resolve, which only the cleanup hook can give.
u.syncAwait(1, () => {
  parentPort.postMessage('ready');
  if (mode === 'exit') setTimeout(() => process.exit(0), 2 + Math.floor(Math.random() * 5));
  return new Promise(ignore);
}).catch(ignore);
