/* Private to uvthreads: the pool's run-queue ring.
 *
 * A bounded lock-free ring of cells after Dmitry Vyukov's MPMC queue: every
 * cell carries a sequence number that says whose turn it is (pos: free for
 * the put at pos; pos + 1: holds the task put at pos), so neither a
 * submitter nor a worker takes a lock per task, and a burst of submissions
 * fills consecutive cells that a worker reads a cache line at a time.
 *
 * Two ways to put: a ring with a sole producer puts with plain stores (no
 * locked instruction); a shared ring's submitters claim a cell with a CAS.
 * Workers always take with a CAS. A queued task is withdrawn in O(1): its
 * submitter clears the cell's task pointer with a CAS, and whichever of
 * that CAS and a worker's exchange of the pointer comes first owns the task.
 *
 * Beside each cell, in an array of its own, the ring keeps the submit time
 * of the task put there, so that the pool's stats can tell the age of the
 * oldest waiting task without touching a task (which its owner may free
 * as soon as a worker has run it). The array is written by submitters and
 * read only by the stats, so its lines stay in the submitters' caches.
 *
 * Everything is static inline: the submit and take paths stay in pool.c's
 * unit. The invariants are the ring's own; the wake-up policy around it is
 * pool.c's. Stress-tested by test_pool (rings shared by three loops, bursts
 * past the ring into overflow, cancels racing takes) under TSan. */
#ifndef UVT_RING_H
#define UVT_RING_H

#include "internal.h"

#define UVT__RING_SIZE 4096u /* cells; a power of two */

typedef struct uvt__cell_s {
  uint64_t seq; /* pos: free for the put at pos; pos + 1: holds the task put at pos */
  uvt__task_t* task;
} uvt__cell_t;

typedef struct uvt__ring_s {
  /* UVT__RING_SIZE cells; set before the ring is shared, then only read.
   * On a line of its own: beside deq_pos, every put's read of it pulled
   * away the line that the next take's CAS writes, and the 1-thread no-op
   * throughput doubled when it moved. */
  _Alignas(UVT__CACHE_LINE) uvt__cell_t* cells;
  uint64_t* times; /* per cell: the put task's submit_ticks (atomic) */
  /* Written by submitters only; also counts the ring's submissions. */
  _Alignas(UVT__CACHE_LINE) uint64_t enq_pos;
  /* Written by workers only. */
  _Alignas(UVT__CACHE_LINE) uint64_t deq_pos;
} uvt__ring_t;

static inline int uvt__ring_init(uvt__ring_t* ring) {
  uint64_t i;
  ring->enq_pos = ring->deq_pos = 0;
  ring->cells = uvt__aligned_alloc(UVT__CACHE_LINE, UVT__RING_SIZE * sizeof(uvt__cell_t));
  ring->times = uvt__aligned_alloc(UVT__CACHE_LINE, UVT__RING_SIZE * sizeof(uint64_t));
  if (ring->cells == NULL || ring->times == NULL) {
    uvt__free(ring->cells);
    uvt__free(ring->times);
    return UV_ENOMEM;
  }
  for (i = 0; i < UVT__RING_SIZE; i++) {
    ring->cells[i].seq = i; /* free for the put at position i */
    ring->cells[i].task = NULL;
    ring->times[i] = 0;
  }
  return 0;
}

static inline void uvt__ring_destroy(uvt__ring_t* ring) {
  uvt__free(ring->cells);
  uvt__free(ring->times);
}

static inline uvt__cell_t* uvt__ring_cell(uvt__ring_t* ring, uint64_t pos) {
  return &ring->cells[pos & (UVT__RING_SIZE - 1)];
}

/* Fills cell (claimed at pos) with task and hands it to the workers. */
static inline void uvt__cell_publish(uvt__ring_t* ring, uvt__cell_t* cell, uint64_t pos,
                                     uvt__task_t* task) {
  /* Read by the submitting thread only, in uvt__ring_withdraw. */
  task->ring_pos = pos;
  /* Relaxed: the release store of seq below publishes it to the stats. */
  uvt__store_relaxed(&ring->times[pos & (UVT__RING_SIZE - 1)], task->submit_ticks);
  /* Relaxed: the release store of seq below publishes it. */
  uvt__store_relaxed(&cell->task, task);
  /* Release: publishes the task pointer and the task's fields. */
  uvt__store_release(&cell->seq, pos + 1);
}

/* Puts task, as the ring's sole producer; returns 0 if the ring is full.
 * No locked instruction: nobody else writes enq_pos. */
static inline int uvt__ring_put_sole(uvt__ring_t* ring, uvt__task_t* task) {
  uint64_t pos = uvt__load_relaxed(&ring->enq_pos);
  uvt__cell_t* cell = uvt__ring_cell(ring, pos);
  /* Acquire: pairs with the worker's release of the cell, so its exchange
   * of the previous task pointer is done before we write ours. */
  if (uvt__load_acquire(&cell->seq) != pos) return 0; /* still holds last lap's task */
  uvt__cell_publish(ring, cell, pos, task);
  /* Release, after the cell: a worker that sees enq_pos move finds the
   * cell published (no "claimed but not yet filled" state in this ring). */
  uvt__store_release(&ring->enq_pos, pos + 1);
  return 1;
}

/* Puts task, racing other submitters for the cell; returns 0 if the ring
 * is full. */
static inline int uvt__ring_put_shared(uvt__ring_t* ring, uvt__task_t* task) {
  uint64_t pos = uvt__load_relaxed(&ring->enq_pos);
  uvt__cell_t* cell;
  for (;;) {
    int64_t turn;
    cell = uvt__ring_cell(ring, pos);
    /* Acquire: as in uvt__ring_put_sole. */
    turn = (int64_t)(uvt__load_acquire(&cell->seq) - pos);
    if (turn == 0) {
      /* Relaxed: the cell's seq, not enq_pos, carries the data. */
      if (uvt__cas_weak_relaxed(&ring->enq_pos, &pos, pos + 1)) break;
    } else if (turn < 0) {
      return 0; /* the cell still holds the task put one lap ago: full */
    } else {
      pos = uvt__load_relaxed(&ring->enq_pos); /* another submitter took it */
    }
  }
  uvt__cell_publish(ring, cell, pos, task);
  return 1;
}

/* Takes the oldest task; NULL if the ring is empty (or the next cell is
 * claimed but not yet published). */
static inline uvt__task_t* uvt__ring_take(uvt__ring_t* ring) {
  uint64_t pos = uvt__load_relaxed(&ring->deq_pos);
  for (;;) {
    uvt__cell_t* cell = uvt__ring_cell(ring, pos);
    /* Acquire: pairs with the submitter's release store of seq. */
    int64_t turn = (int64_t)(uvt__load_acquire(&cell->seq) - (pos + 1));
    if (turn == 0) {
      /* Relaxed: the cell's seq, not deq_pos, carries the data. */
      if (uvt__cas_weak_relaxed(&ring->deq_pos, &pos, pos + 1)) {
        /* Exchange: races with a withdraw's CAS on the same pointer; the
         * single modification order gives the task to exactly one of us.
         * Acquire: the task's fields were published with the pointer. */
        uvt__task_t* task = uvt__exchange_acquire(&cell->task, NULL);
        /* Release: the exchange above happens before the next lap's put. */
        uvt__store_release(&cell->seq, pos + UVT__RING_SIZE);
        if (task != NULL) return task;
        pos = uvt__load_relaxed(&ring->deq_pos); /* withdrawn: skip the cell */
      }
    } else if (turn < 0) {
      return NULL;
    } else {
      pos = uvt__load_relaxed(&ring->deq_pos); /* another worker took it */
    }
  }
}

/* Takes task back if no worker has taken it yet: 1 if it did. Only the
 * thread that put task may call it (it alone reads task->ring_pos). */
static inline int uvt__ring_withdraw(uvt__ring_t* ring, uvt__task_t* task) {
  uvt__task_t* expected = task;
  /* Races with the worker's exchange in uvt__ring_take: one of them gets
   * the task. If the cell has moved on, it holds NULL or another task. */
  return uvt__cas_strong_seq_cst(&uvt__ring_cell(ring, task->ring_pos)->task, &expected, NULL);
}

/* Whether the ring holds or is being given a task. Relaxed: the callers
 * order it (uvt__work_waiting in pool.c) or only need a hint. */
static inline int uvt__ring_busy(uvt__ring_t* ring) {
  return uvt__load_relaxed(&ring->enq_pos) != uvt__load_relaxed(&ring->deq_pos);
}

/* The ring's next cell holds a task. Spinners read this rather than
 * enq_pos, so that the line submitters write on every put is not pulled
 * away from them (the cell's line has to travel to a worker anyway).
 * Relaxed: a hint; tasks are taken by the ring's own protocol. */
static inline int uvt__ring_next_full(uvt__ring_t* ring) {
  uint64_t pos = uvt__load_relaxed(&ring->deq_pos);
  return uvt__load_relaxed(&uvt__ring_cell(ring, pos)->seq) != pos;
}

/* The submit_ticks of the oldest task waiting in the ring, or 0 if none:
 * a snapshot for the stats, any thread. Cells whose task was withdrawn
 * are skipped (up to 64 of them; a worker clears them as it passes). A cell
 * claimed but not yet published ends the look (it is a few instructions
 * from done). */
static inline uint64_t uvt__ring_oldest(uvt__ring_t* ring) {
  uint64_t pos = uvt__load_relaxed(&ring->deq_pos);
  unsigned looked;
  for (looked = 0; looked < 64; looked++, pos++) {
    uvt__cell_t* cell = uvt__ring_cell(ring, pos);
    uint64_t ticks;
    uvt__task_t* task;
    /* Acquire: pairs with the put's release of seq, so this lap's time
     * and task pointer are seen. */
    int64_t turn = (int64_t)(uvt__load_acquire(&cell->seq) - (pos + 1));
    if (turn < 0) return 0; /* nothing put there yet: the ring is empty from here */
    if (turn > 0) continue; /* taken since we read deq_pos */
    ticks = uvt__load_relaxed(&ring->times[pos & (UVT__RING_SIZE - 1)]);
    task = uvt__load_relaxed(&cell->task);
    /* Acquire fence: the two loads above happen before the check below
     * (a seqlock reader's fence). If seq is unchanged, no worker took the
     * cell in between, so no later put can have overwritten the time. */
    uvt__fence_acquire();
    if (uvt__load_relaxed(&cell->seq) != pos + 1) continue; /* taken meanwhile */
    if (task != NULL) return ticks;
  }
  return 0;
}

/* Tasks taken from the ring so far. Relaxed: a hint. */
static inline uint64_t uvt__ring_takes(uvt__ring_t* ring) {
  return uvt__load_relaxed(&ring->deq_pos);
}

#endif /* UVT_RING_H */
