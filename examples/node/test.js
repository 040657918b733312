'use strict';
// The addon's tests: node --test test.js (CTest: node_addon; run-asan.sh
// under ASan+UBSan). UVT_NODE_ADDON names the addon to test (default
// ./build/uvthreads.node); UVT_NODE_WORKER_CYCLES the worker_threads
// terminate cycles (default 30).
const test = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const { Worker } = require('node:worker_threads');
const path = require('node:path');
const { performance } = require('node:perf_hooks');
const u = require('./index.js');

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const UV_EOF = -4095;
const UV_ECANCELED = -125;

// Runs code in a child node with the same environment (the same addon and,
// under ASan, the same LD_PRELOAD); `u` is the addon's index.js there.
function child(code, timeoutMs = 20000, { loadAddon = true } = {}) {
  const prelude = loadAddon ? `const u = require(${JSON.stringify(path.join(__dirname, 'index.js'))});\n` : '';
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['-e', prelude + code],
    { env: process.env, encoding: 'utf8', timeout: timeoutMs });
  r.ms = performance.now() - t0;
  return r;
}

function sum(n) { return n === 0 ? 0 : n * (n - 1) / 2; }

test('the addon: versions, and the libuv it runs on', () => {
  const { uvHeader, uvRuntime } = u.versions;
  const [hMaj, hMin] = uvHeader.split('.').map(Number);
  const [rMaj, rMin] = uvRuntime.split('.').map(Number);
  assert.equal(hMaj, 1);
  assert.equal(rMaj, 1);
  assert.ok(rMin >= hMin, `runtime libuv ${uvRuntime} older than the header ${uvHeader}`);
  assert.match(u.versions.uvthreads, /^\d+\.\d+\.\d+$/);
});

test('1. Promises from uvt_threaded', async (t) => {
  await t.test('run(n) resolves with the job\'s result', async () => {
    assert.equal(await u.run(1000), sum(1000));
    const ns = Array.from({ length: 300 }, (_, i) => i * 7);
    assert.deepEqual(await Promise.all(ns.map((n) => u.run(n))), ns.map(sum));
    assert.throws(() => u.run(-1), RangeError);
  });

  await t.test('.then handlers run promptly (a callback scope around the resolve)', async () => {
    // Nothing else happens until this timer fires: without a callback scope
    // the reactions would wait for it.
    const keep = setTimeout(() => {}, 5000);
    try {
      for (let i = 0; i < 20; i++) {
        const t0 = performance.now();
        await u.run(10, 2);
        const ms = performance.now() - t0;
        assert.ok(ms < 1000, `resolution took ${ms.toFixed(0)} ms to reach .then`);
      }
    } finally {
      clearTimeout(keep);
    }
  });

  await t.test('a job in flight keeps Node alive; an idle bridge does not', () => {
    const busy = child('u.run(100, 300).then((v) => console.log("resolved", v));');
    assert.equal(busy.status, 0, busy.stderr);
    assert.match(busy.stdout, /resolved 4950/);
    assert.ok(busy.ms >= 250, `exited after ${busy.ms} ms, before its job`);
    const idle = child('console.log("loaded", u.versions.uvthreads);');
    assert.equal(idle.status, 0, idle.stderr);
    assert.match(idle.stdout, /loaded/);
    assert.ok(idle.ms < 5000, `an idle bridge kept node alive ${idle.ms} ms`);
  });

  assert.equal(u.stats().liveJobs, 0);
});

test('2. for await over uvt_threaded_iterable', async (t) => {
  await t.test('pauses at the high-water mark, resumes when drained, in order', async () => {
    const it = u.iterate(2000, { maxSize: 16, highWaterMark: 8 });
    let expect = 0;
    for await (const x of it) {
      assert.equal(x, expect++);
      if (x % 200 === 0) await sleep(3); // let the buffer fill up
    }
    assert.equal(expect, 2000);
    assert.equal(it.endStatus, UV_EOF);
    assert.ok(it.pauses >= 1, 'never paused');
    assert.ok(it.resumes >= 1, 'never resumed');
    assert.ok(it.maxBuffered <= 8, `JS buffer reached ${it.maxBuffered} > highWaterMark 8`);
    assert.deepEqual(it.endStats, { allocated: 2000, delivered: 2000, dropped: 0, refused: 0 });
  });

  await t.test('an early break closes it: drop frees the buffered items', async () => {
    const it = u.iterate(-1, { maxSize: 8, highWaterMark: 4 });
    for await (const x of it) {
      if (x === 50) {
        await sleep(20); // JS buffer at the mark, the native buffer full
        break;
      }
    }
    assert.equal(it.endStatus, UV_ECANCELED);
    const s = it.endStats;
    assert.equal(s.allocated, s.delivered + s.dropped + s.refused, JSON.stringify(s));
    assert.ok(s.dropped > 0, `nothing dropped: ${JSON.stringify(s)}`);
  });

  await t.test('many iterators, broken at random points', async () => {
    const runs = Array.from({ length: 12 }, async (_, k) => {
      const it = u.iterate(k % 3 === 0 ? 500 : -1, { maxSize: 1 + (k % 5), highWaterMark: 1 + (k % 4) });
      const stopAt = Math.floor(Math.random() * 300);
      let n = 0;
      for await (const x of it) {
        assert.equal(x, n++);
        if (x === stopAt) break;
        if (x % 37 === 0) await sleep(1);
      }
      const s = it.endStats;
      assert.equal(s.allocated, s.delivered + s.dropped + s.refused, JSON.stringify(s));
    });
    await Promise.all(runs);
  });

  await t.test('a failing generator rejects after its items', async () => {
    const seen = [];
    await assert.rejects(async () => {
      for await (const x of u.iterate(100, { failAt: 10 })) seen.push(x);
    }, { code: 'EIO' });
    assert.equal(seen.length, 10);
  });

  assert.equal(u.stats().liveIters, 0);
});

test('3. uvt_sync_await into JS from a thread', async (t) => {
  await t.test('the await resolves when the Promise settles', async () => {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const r = await u.syncAwait(20, (i) => new Promise((resolve) => setTimeout(resolve, 2, i * 10)));
    clearInterval(timer);
    assert.deepEqual(r.statuses, Array(20).fill('OK'));
    assert.deepEqual(r.values, Array.from({ length: 20 }, (_, i) => i * 10));
    assert.ok(ticks > 0, 'the loop did not run while the thread waited');
  });

  await t.test('rejections, throws and plain values', async () => {
    const r = await u.syncAwait(4, (i) => {
      if (i === 0) return Promise.reject(new Error('no'));
      if (i === 1) throw new Error('thrown');
      if (i === 2) return 42;
      return Promise.resolve(7);
    });
    assert.deepEqual(r.statuses, ['EIO', 'EIO', 'OK', 'OK']);
    assert.deepEqual(r.values.slice(2), [42, 7]);
  });

  await t.test('1000 round trips', async () => {
    const r = await u.syncAwait(1000, (i) => Promise.resolve(i));
    assert.equal(r.values.reduce((a, b) => a + b, 0), sum(1000));
  });

  assert.equal(u.stats().pendingAwaits, 0);
});

test('4. a background channel', async (t) => {
  await t.test('delivers in order, then EOF', async () => {
    const seen = [];
    const [status, stats] = await new Promise((resolve) => {
      u.ticker(20, 1, (s) => seen.push(s), (st, stats) => resolve([st, stats]));
    });
    assert.equal(status, 'EOF');
    assert.deepEqual(seen, Array.from({ length: 20 }, (_, i) => i));
    assert.deepEqual(stats, { put: 20, delivered: 20, dropped: 0, refused: 0 });
  });

  await t.test('stop ends it with ECANCELED', async () => {
    let n = 0;
    let handle;
    const [status] = await new Promise((resolve) => {
      handle = u.ticker(-1, 1, () => { if (++n === 10) handle.stop(); }, (st, stats) => resolve([st, stats]));
    });
    assert.equal(status, 'ECANCELED');
  });

  await t.test('an open channel keeps Node alive until it ends', () => {
    const r = child('u.ticker(5, 20, (s) => console.log("tick", s), (st) => console.log("end", st));');
    assert.equal(r.status, 0, r.stderr);
    assert.equal((r.stdout.match(/tick/g) || []).length, 5);
    assert.match(r.stdout, /end EOF/);
  });

  // An unref'd background producer does not keep Node from exiting; at exit
  // the cleanup hook closes the bridge, which stops the channel (ECANCELED)
  // and its producer.
  await t.test('an unref\'d channel lets Node exit', () => {
    const r = child(`
      const t = u.ticker(-1, 5, () => {});
      t.unref();
      setTimeout(() => console.log('main done'), 50);`, 10000);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /main done/);
    assert.ok(r.ms < 5000, `node stayed ${r.ms} ms`);
  });

  await t.test('an unref\'d iterator lets Node exit', () => {
    const r = child(`
      const it = u.iterate(-1, { intervalMs: 5 });
      it.unref();
      setTimeout(() => console.log('main done'), 50);`, 10000);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /main done/);
    assert.ok(r.ms < 5000, `node stayed ${r.ms} ms`);
  });

  assert.equal(u.stats().liveTickers, 0);
});

// A worker running worker.js: w.ready settles once one of its sync_awaits
// waits on a JS promise that never settles (only the cleanup hook can
// resolve it, and the bridge's close waits for that); w.exited with its
// exit code.
function startWorker(mode) {
  const w = new Worker(path.join(__dirname, 'worker.js'), { workerData: { mode } });
  w.exited = new Promise((resolve, reject) => {
    w.on('exit', resolve);
    w.on('error', reject);
  });
  w.ready = new Promise((resolve) => w.once('message', resolve));
  return w;
}

const CYCLES = Number(process.env.UVT_NODE_WORKER_CYCLES || 30);
test('5+6. worker_threads torn down while busy (async cleanup hook)',
  { timeout: Math.max(50000, CYCLES * 1000) }, async (t) => {
  await t.test('a worker with a sync_await pending on JS terminates', async () => {
    for (const mode of ['busy', 'exit']) {
      const w = startWorker(mode);
      await w.ready;
      await sleep(10);
      const code = mode === 'exit' ? await w.exited : await w.terminate();
      assert.equal(code, mode === 'exit' ? 0 : 1);
    }
  });

  await t.test('3 workers x N cycles, terminated with work in flight', async () => {
    const cycles = CYCLES;
    // The main thread's bridge shares the default pool with the workers'.
    let mainJobs = 0;
    let stopMain = false;
    const mainStream = () => u.run(500, 1).then(() => { mainJobs++; if (!stopMain) mainStream(); });
    mainStream();
    const t0 = performance.now();
    for (let c = 0; c < cycles; c++) {
      const ws = [startWorker('busy'), startWorker(c % 5 === 0 ? 'exit' : 'busy'), startWorker('busy')];
      // Two are terminated once ready, after a random delay (the second is
      // ended by process.exit() every fifth cycle); the third often before
      // its script even loaded the addon.
      await Promise.all([ws[0].ready, ws[1].ready]);
      await sleep(Math.floor(Math.random() * 10));
      const codes = await Promise.all(ws.map((w) => w.terminate()));
      for (const [i, code] of codes.entries()) {
        if (!(code === 1 || code === 0 || code === undefined)) assert.fail(`cycle ${c} worker ${i} exit code ${code}`);
      }
    }
    stopMain = true;
    t.diagnostic(`${cycles} cycles x 3 workers in ${((performance.now() - t0) / 1000).toFixed(1)} s, ` +
                 `${mainJobs} main-thread jobs meanwhile`);
    await sleep(20);
    assert.ok(mainJobs > 0);
  });

  await t.test('loaded by workers only: node unloads the addon after the last one', () => {
    // node dlclose()s an addon once no environment uses it: the library
    // stops the default pool's threads at unload (before it did not, and
    // this child died of SIGSEGV in a pool thread).
    const r = child(`
      const { Worker } = require('node:worker_threads');
      (async () => {
        for (let c = 0; c < 10; c++) {
          const ws = [0, 1, 2].map(() => new Worker(${JSON.stringify(path.join(__dirname, 'worker.js'))}));
          await Promise.all(ws.map((w) => new Promise((resolve) => w.once('message', resolve))));
          for (const w of ws) await w.terminate();
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        console.log('workers-only done');
      })();`, 40000, { loadAddon: false });
    assert.equal(r.signal, null, `child killed by ${r.signal}: ${r.stderr}`);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /workers-only done/);
  });
});
