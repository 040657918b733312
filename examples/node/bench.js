'use strict';
// 100,000 no-op jobs, each resolving a Promise: uvthreads (uvt_threaded, a
// callback scope per completion) against Node's napi_create_async_work
// (libuv's thread pool, a callback scope per completion), in one process,
// alternating the two, with 1000 jobs in flight and with all of them in
// flight. Prints the median of each and the ratio.
//
//   node bench.js                      (UVT_NODE_ADDON picks the addon build)
//   JOBS=100000 ROUNDS=7 node bench.js
//
// Pools: uvthreads' default pool (up to 16 threads, UVT_POOL_SIZE) and
// libuv's (4 threads, UV_THREADPOOL_SIZE); set them equal to compare like
// for like.
const { performance } = require('node:perf_hooks');
const u = require('./index.js');

const JOBS = Number(process.env.JOBS || 100000);
const ROUNDS = Number(process.env.ROUNDS || 7);

// Keeps `inflight` jobs outstanding until `total` have completed.
function windowed(fn, total, inflight) {
  return new Promise((resolve, reject) => {
    let started = 0;
    let done = 0;
    const next = () => {
      done++;
      if (started < total) {
        started++;
        fn().then(next, reject);
      } else if (done === total) {
        resolve();
      }
    };
    const first = Math.min(inflight, total);
    for (let i = 0; i < first; i++) {
      started++;
      fn().then(next, reject);
    }
  });
}

function all(fn, total) {
  const ps = new Array(total);
  for (let i = 0; i < total; i++) ps[i] = fn();
  return Promise.all(ps);
}

async function time(fn, inflight) {
  const t0 = performance.now();
  if (inflight === Infinity) await all(fn, JOBS);
  else await windowed(fn, JOBS, inflight);
  return performance.now() - t0;
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  const sides = { uvthreads: u.noop, napi_async_work: u.noopAsyncWork };
  const settings = [1000, Infinity];
  console.log(`node ${process.version}, uvthreads ${u.versions.uvthreads}, libuv ${u.versions.uvRuntime}`);
  console.log(`${JOBS} Promise-resolved no-op jobs, median of ${ROUNDS} alternating rounds ` +
              `(UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE || '4 (default)'}, ` +
              `UVT_POOL_SIZE=${process.env.UVT_POOL_SIZE || '16 (default)'})`);
  // Warm up both sides in both settings (JIT, pools, allocator, heap size).
  for (const inflight of settings) for (const fn of Object.values(sides)) await time(fn, inflight);
  const results = [];
  for (const inflight of settings) {
    const ms = { uvthreads: [], napi_async_work: [] };
    for (let r = 0; r < ROUNDS; r++) {
      const order = r % 2 ? ['napi_async_work', 'uvthreads'] : ['uvthreads', 'napi_async_work'];
      for (const name of order) ms[name].push(await time(sides[name], inflight));
    }
    results.push({ inflight, ms });
  }
  console.log('');
  console.log('in flight | uvthreads ms (jobs/s)  | napi_async_work ms (jobs/s) | ratio (async_work / uvthreads)');
  for (const { inflight, ms } of results) {
    const a = median(ms.uvthreads);
    const b = median(ms.napi_async_work);
    const rate = (m) => `${(JOBS / m * 1000 / 1e3).toFixed(0)}k`;
    const label = inflight === Infinity ? 'all' : String(inflight);
    console.log(`${label.padStart(9)} | ${a.toFixed(1).padStart(8)} (${rate(a).padStart(5)}/s)    | ` +
                `${b.toFixed(1).padStart(8)} (${rate(b).padStart(5)}/s)          | ${(b / a).toFixed(2)}x`);
    console.log(`          |   rounds: ${ms.uvthreads.map((x) => x.toFixed(0)).join(' ')}` +
                `  vs  ${ms.napi_async_work.map((x) => x.toFixed(0)).join(' ')}`);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
