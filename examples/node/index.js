'use strict';
// The JS face of the addon (addon.c). The addon is found through
// UVT_NODE_ADDON (CTest and run-asan.sh set it) or in ./build.
const path = require('node:path');

const addonPath = process.env.UVT_NODE_ADDON || path.join(__dirname, 'build', 'uvthreads.node');
const native = require(addonPath);

function uvError(status, what) {
  const code = native.errname(status);
  const err = new Error(`${what}: ${code}`);
  err.code = code;
  err.errno = status;
  return err;
}

// Reports an error thrown by user code called from a native callback as an
// uncaught exception, outside the native frame.
function report(err) {
  process.nextTick(() => { throw err; });
}

// Runs a blocking job on the uvthreads pool: sums 0..n-1, then sleeps
// sleepMs; resolves with the sum.
function run(n, sleepMs = 0) {
  return native.run(n, sleepMs);
}

// An async iterator over a blocking generator (uvt_threaded_iterable) that
// yields 0, 1, 2, ... (count < 0: endlessly). Items arrive in a JS buffer;
// the native side is paused when the buffer reaches highWaterMark and
// resumed once the consumer drained it. An early break (return()) closes the
// native iterator: its buffered items go to the drop callback, which frees
// them, and return() settles once the generator has ended.
//   maxSize: the native buffer between the generator thread and the loop
//   intervalMs: the generator sleeps this long before each item
//   failAt: the generator fails with EIO before this item
class Iterate {
  constructor(count = -1, { maxSize = 16, highWaterMark = 8, intervalMs = 0, failAt = -1 } = {}) {
    this.highWaterMark = highWaterMark;
    this.buffer = [];
    this.waiter = null;      // { resolve, reject } of a next() waiting for an item
    this.ended = false;      // the native final callback came
    this.endStatus = 0;
    this.endStats = null;    // { allocated, delivered, dropped, refused }
    this.closing = false;    // return() was called
    this.paused = false;
    this.pauses = 0;
    this.resumes = 0;
    this.maxBuffered = 0;
    this._onEnded = [];
    this.handle = native.iterStart(count, maxSize, intervalMs, failAt,
      (item) => this._onItem(item), (status, stats) => this._onEnd(status, stats));
  }

  _onItem(item) {
    try {
      if (this.waiter !== null) {
        const w = this.waiter;
        this.waiter = null;
        w.resolve({ value: item, done: false });
        return;
      }
      this.buffer.push(item);
      if (this.buffer.length > this.maxBuffered) this.maxBuffered = this.buffer.length;
      if (!this.paused && this.buffer.length >= this.highWaterMark) {
        this.paused = true;
        this.pauses++;
        native.iterPause(this.handle); // takes effect before the next item
      }
    } catch (err) {
      report(err);
    }
  }

  _onEnd(status, stats) {
    try {
      this.ended = true;
      this.endStatus = status;
      this.endStats = stats;
      if (this.waiter !== null) {
        const w = this.waiter;
        this.waiter = null;
        this._settleEnd(w);
      }
      for (const fn of this._onEnded.splice(0)) fn();
    } catch (err) {
      report(err);
    }
  }

  _settleEnd(w) {
    const eof = -4095; // UV_EOF
    if (this.endStatus === eof || this.closing) w.resolve({ value: undefined, done: true });
    else w.reject(uvError(this.endStatus, 'generator'));
  }

  next() {
    if (this.buffer.length > 0) {
      const value = this.buffer.shift();
      if (this.paused && this.buffer.length === 0 && !this.ended) {
        this.paused = false;
        this.resumes++;
        native.iterResume(this.handle);
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.ended || this.closing) {
      return new Promise((resolve, reject) => this._settleEnd({ resolve, reject }));
    }
    return new Promise((resolve, reject) => { this.waiter = { resolve, reject }; });
  }

  // for await's early exit (break, throw, return): uvt_iter_stop(it, drop).
  return() {
    if (!this.closing && !this.ended) {
      this.closing = true;
      this.buffer.length = 0; // already delivered, nothing native to free
      native.iterClose(this.handle);
    }
    this.closing = true;
    return this.ended ? Promise.resolve({ value: undefined, done: true })
      : new Promise((resolve) => this._onEnded.push(() => resolve({ value: undefined, done: true })));
  }

  // Whether the open iterator keeps the loop alive (uvt_iter_ref/unref).
  ref() { return refOp(native.iterRef, this.handle); }
  unref() { return refOp(native.iterUnref, this.handle); }

  [Symbol.asyncIterator]() { return this; }
}

function refOp(fn, handle) {
  return fn(handle);
}

function iterate(count, options) {
  return new Iterate(count, options);
}

// A separate thread calls uvt_sync_await n times; each time the loop function
// calls fn(i), and the await resolves when the Promise fn returned settles
// (a plain value resolves it at once). Resolves with { statuses, values }:
// status 'OK' with the fulfilled value, 'EIO' for a rejection or a throw,
// 'ECANCELED' when the environment was torn down first.
async function syncAwait(n, fn) {
  const r = await native.syncAwait(n, (i) => {
    try {
      return fn(i);
    } catch (err) {
      return Promise.reject(err);
    }
  });
  return { statuses: r.statuses.map((s) => native.errname(s)), values: r.values };
}

// A channel fed by a thread of the addon's own: count items (count < 0:
// endlessly), one every intervalMs. onTick(seq) per item, onEnd(status,
// stats) once: 'EOF' when the producer finished, 'ECANCELED' when stopped.
function ticker(count, intervalMs, onTick, onEnd = () => {}, { maxSize = 4 } = {}) {
  const handle = native.tickerStart(count, intervalMs, maxSize,
    (seq) => { try { onTick(seq); } catch (err) { report(err); } },
    (status, stats) => { try { onEnd(native.errname(status), stats); } catch (err) { report(err); } });
  return {
    stop: () => native.tickerStop(handle),
    ref: () => refOp(native.tickerRef, handle),
    unref: () => refOp(native.tickerUnref, handle),
  };
}

module.exports = {
  run,
  noop: native.noop,
  noopAsyncWork: native.noopAsyncWork,
  iterate,
  syncAwait,
  ticker,
  stats: native.stats,
  errname: native.errname,
  versions: native.versions,
  addonPath,
};
