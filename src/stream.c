/* The bounded buffer between producer threads and the loop (stream.h).
 *
 * A ring of slots, a power of two of them, at least max_size, each with
 * a lap byte, and two positions: `claim`, the items producers have
 * claimed a slot for, and `head`, the items the loop has passed to the
 * owner's deliver hook and committed. A producer claims position pos with
 * one CAS on `claim`, while pos - head < max_size, writes its item into
 * slot pos & mask and publishes it by storing the position's lap into the
 * slot's lap byte (release); the loop delivers slots in order as long as
 * their byte says published (acquire). So items cross with one locked
 * instruction per item and no lock from any number of channel producers.
 * An item stays counted against max_size until it was passed to the
 * callback, which keeps the bound exact; the loop commits every quarter
 * buffer and at the end of a batch, so producers refill the freed slots
 * while the rest of the batch is delivered.
 *
 * An iterator's generator is the sole producer of its stream, so where
 * the system has a heavy barrier (below) it claims without a CAS (SOLE):
 * its position is `tail`, which only it writes (release, after the lap
 * byte), and `claim` keeps only the bits. After each publish it sets
 * SCHEDULED with one RMW (uvt__stream_publish_sole), except in FAST: in a
 * flood, once UVT__FAST_AFTER items came since its last heavy barrier, the
 * loop, which holds SCHEDULED and polls anyway, sets FAST, and the
 * generator's puts are plain stores. Two asymmetric Dekker handshakes
 * stand in for the locked instructions, each a compiler barrier on the
 * producer's side and a heavy barrier on the other: to let go of a FAST
 * stream, the loop clears FAST, runs the barrier, then reads tail; to take
 * SOLE back (uvt__stream_unbias: a stop, here), it sets LOCKED, runs the
 * barrier, waits for a claim in progress (`putting`) to end, then makes
 * tail the position in claim, and claims are CASes again. So a stop still
 * drops every item whose put passed its check, before it returns, and
 * every later put gets UV_EPIPE.
 *
 * A channel's producer becomes SOLE the same way once it has claimed
 * UVT__BIAS_AFTER times in a row (uvt__stream_bias: the stream is biased
 * towards it, its `owner`). The first put of another producer takes SOLE
 * back, and so does the loop before the stream ends (the final callback
 * may free the stream, so it waits for the owner's claim in progress). So
 * a lone producer pays one heavy barrier at most per UVT__BIAS_AFTER items
 * and a channel with several producers pays nothing, or one barrier now
 * and then. Only the owner writes `putting`, and an owner stays the owner
 * (with SOLE taken back) until it has seen that itself, at its next claim:
 * a thread that read "SOLE, and I own it" and was then descheduled may
 * still be about to claim, and no other thread may own the stream until
 * it knows better.
 *
 * `claim` also holds two bits (and FAST), changed by the same atomic
 * operations: SCHEDULED, the loop will visit the stream (its message is
 * queued on the bridge, or the loop holds it: `hold`), and REFUSING, no
 * more claims (closed, stopped, the producer done, the bridge closing).
 * The claim that finds SCHEDULED clear sets it and, after it published,
 * queues the message; only the loop clears it, in one RMW that also reads
 * the claimed position, so either the loop sees a claim or the claim sees
 * the bit clear and queues the message: no fence on either side, and the
 * message is never queued twice.
 *
 * Batches. A visit that delivered something keeps the bit and has the
 * bridge poll the stream (uvt__bridge_poll): the loop comes back at its
 * next iteration, after a short wait for half the buffer to fill, without
 * any producer queueing anything or waking it. Within a visit, once it has
 * delivered a chunk, the loop waits briefly for each next one
 * (uvt__stream_wait_chunk) while its budget lasts. So in a flood the
 * producers pay one CAS per item and the loop takes up to its budget per
 * iteration; a visit that finds nothing new lets go of the bit. A claimed
 * slot the loop finds not yet published (its producer is between its CAS
 * and its store) is waited for briefly, else polled for. A claim keeps its
 * producer "inside": the final callback needs the claimed position
 * delivered, so it never runs while a claim is unpublished, and the
 * producer that queues the message publishes before it queues. Producers
 * that block for space, and a producer's close, pass the stream's gate
 * (below) instead.
 *
 * A stop sets REFUSING, which returns the claimed position at that
 * instant: it waits for those items to be published and drops them before
 * it returns; claims after it fail. Producers that find the ring full
 * spin briefly, then sleep on `space` after counting themselves in
 * `waiters`; the loop, after it moves head, fences and wakes them if any
 * is counted (a Dekker handshake: each side fences between its store and
 * its load).
 *
 * State changes (pause, stop, close, the producer's end, the bridge's
 * close, the final callback) take the mutex. A pause, stop or close issued
 * from inside a callback takes effect before the next item.
 *
 * Channel producers may call at any time, also while the loop finishes the
 * stream and its final callback frees or reopens it. Those that block and
 * those that close pass the stream's gate: a count of producers inside and
 * an open bit, entered by a CAS only while the bit is set. The finish
 * clears the bit and waits for the count to drop (those inside are refused
 * at once: they hold the mutex for a few instructions), so the final
 * callback runs with no producer inside, and a reopen's fresh mutex is
 * never one that somebody holds. */
#include "stream.h"
#include "context.h"

#if defined(__linux__)
#include <linux/membarrier.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define UVT__KIND_STREAM_DONE (UVT__KIND_STREAM ^ (uintptr_t)0xd0d0)
#define UVT__PUT_SPIN_NS 10000u /* a full buffer: how long a producer spins before it sleeps */
#define UVT__STREAM_GATE_OPEN 0x80000000u
#define UVT__UNPUBLISHED_SPIN_NS 2000u /* a claimed slot: how long the loop waits for its publish */

/* stream->claim: the claimed position and five bits. FAST: the loop
 * holds SCHEDULED in a long flood and lets the sole producer skip its RMW.
 * SOLE: one producer claims without a CAS, its position is tail (POS is
 * stale). LOCKED: the mode is changing (uvt__stream_bias, _unbias): nobody
 * claims. */
#define UVT__CLAIM_REFUSING ((uint64_t)1 << 63)
#define UVT__CLAIM_SCHEDULED ((uint64_t)1 << 62)
#define UVT__CLAIM_FAST ((uint64_t)1 << 61)
#define UVT__CLAIM_SOLE ((uint64_t)1 << 60)
#define UVT__CLAIM_LOCKED ((uint64_t)1 << 59)
#define UVT__CLAIM_POS (UVT__CLAIM_LOCKED - 1)

/* uvt__stream_claim's *how: the claim set SCHEDULED (the caller queues
 * the message after its publish), or it was the sole producer's. */
enum { UVT__CLAIMED = 0, UVT__CLAIMED_POST = 1, UVT__CLAIMED_SOLE = 2 };
#define UVT__CLAIM_RETRY 1 /* uvt__stream_claim_sole: the mode changed */

/* A channel's producer that made this many claims in a row, with no other
 * producer's between them, becomes the stream's sole producer (its owner)
 * until another producer or the loop's end of the stream takes it back:
 * at most one heavy barrier per this many items. */
#define UVT__BIAS_AFTER 65536u
#define UVT__BIAS_SAMPLE 256u /* claims are counted at every this many positions */

/* A sole producer's stream that has delivered this many items since the
 * loop last ran the heavy barrier for it goes FAST at its next flood: the
 * barrier that ends FAST (1-50 us) then costs at most a nanosecond an
 * item. */
#define UVT__FAST_AFTER 65536u

/* The heavy side of an asymmetric barrier (membarrier(2), private
 * expedited): when it returns, every thread of the process has passed a
 * full memory barrier, or will before it runs again. The sole producer's
 * side is a compiler barrier. Without it (other systems, a kernel or a
 * sandbox that refuses the call; valgrind offers it) every producer claims
 * with a CAS. */
#if defined(__linux__) && defined(__NR_membarrier)
static int uvt__heavy_barrier_registered;
static uv_once_t uvt__heavy_barrier_once = UV_ONCE_INIT;

static void uvt__heavy_barrier_register(void) {
  uvt__heavy_barrier_registered =
      syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

static int uvt__heavy_barrier_ready(void) {
  uv_once(&uvt__heavy_barrier_once, uvt__heavy_barrier_register);
  return uvt__heavy_barrier_registered;
}

static void uvt__heavy_barrier(void) {
  /* Cannot fail once registered (a fork's child inherits the
   * registration); going on without it could strand an item. */
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0) abort();
}
#else
static int uvt__heavy_barrier_ready(void) { return 0; }
static void uvt__heavy_barrier(void) {}
#endif

/* Who claims: a producer thread's identity, never 0 (glibc's pthread_t is
 * its descriptor's address). A thread that exits while it owns a stream
 * leaves the identity to the next thread given the same one, which then
 * follows it (its exit happens before that thread starts). */
static uintptr_t uvt__producer_self(void) {
#if defined(__linux__)
  return (uintptr_t)pthread_self(); /* one load, where uv_thread_self is two calls */
#else
  uv_thread_t self = uv_thread_self();
  return (uintptr_t)self;
#endif
}

/* Position pos lives in slot pos & mask, and is published once the slot's
 * lap byte says (pos >> shift) + 1, modulo 256: the byte held the lap
 * before (a producer never runs a lap ahead of the loop), so the two never
 * match by accident. The bytes sit apart from the items, 64 to a cache
 * line: a slot costs a producer an eighth of an item line and a
 * sixty-fourth of a lap line, which is what crosses between the cores. */
static unsigned char uvt__stream_lap(const uvt__stream_t* stream, uint64_t pos) {
  return (unsigned char)((pos >> stream->shift) + 1);
}

/* What a claimed slot holds when its put was refused after the claim (a
 * blocking put on the loop thread): the loop skips it. */
static char uvt__void_item;
#define UVT__VOID_ITEM ((void*)&uvt__void_item)

/* stream->flags: written by any thread, always under stream->mutex. */
enum {
  UVT__STREAM_CLOSED = 1u << 0,       /* the producer side closed gracefully */
  UVT__STREAM_PRODUCER_DONE = 1u << 1 /* the producer ended (or never will run) */
};
/* stream->lflags: written only by the loop thread, under stream->mutex, so
 * the loop may read them without the lock. */
enum {
  UVT__STREAM_PAUSED = 1u << 0,         /* no delivery until resumed */
  UVT__STREAM_STOPPED = 1u << 1,        /* aborted: buffer dropped, producers refused */
  UVT__STREAM_BRIDGE_CLOSING = 1u << 2, /* deliver the buffer, then end */
  UVT__STREAM_FINISHED = 1u << 3        /* the final callback ran or is running */
};
#define UVT__STREAM_REFUSING (UVT__STREAM_STOPPED | UVT__STREAM_BRIDGE_CLOSING | UVT__STREAM_FINISHED)

/* Lock held. */
static int uvt__stream_refusing(const uvt__stream_t* stream) {
  return (stream->flags & UVT__STREAM_CLOSED) || (stream->lflags & UVT__STREAM_REFUSING);
}

/* Items may be passed to the callback now (loop thread). */
static int uvt__stream_deliverable(const uvt__stream_t* stream) {
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) return 0;
  return !(stream->lflags & UVT__STREAM_PAUSED) || (stream->lflags & UVT__STREAM_BRIDGE_CLOSING);
}

/* The positions claimed: in claim, or the sole producer's own tail. Any
 * thread. Acquire on tail: pairs with the producer's release, so its items
 * below it are published; claim needs none (the slots' lap bytes order
 * their items). */
static uint64_t uvt__stream_claimed(const uvt__stream_t* stream) {
  /* Acquire: a stream that just became SOLE shows its tail (the release
   * in uvt__stream_bias). */
  uint64_t c = uvt__load_acquire(&stream->claim);
  if (c & UVT__CLAIM_SOLE) return uvt__load_acquire(&stream->tail);
  return c & UVT__CLAIM_POS;
}

/* Items claimed and not yet committed, published or not (loop thread). */
static uint64_t uvt__stream_buffered(const uvt__stream_t* stream) {
  return uvt__stream_claimed(stream) - stream->head;
}

int uvt__stream_is_open(const uvt__stream_t* stream) {
  (void)UVT__TAG_READ(stream->tag);
  return uvt__load_acquire(&stream->tag) == UVT__TAG(stream, UVT__KIND_STREAM);
}

int uvt__stream_enter(uvt__stream_t* stream) {
  uintptr_t tag;
  unsigned gate;
  (void)UVT__TAG_READ(stream->tag);
  /* Acquire: pairs with the release stores of the tag, so an open tag
   * shows the gate it was opened with. */
  tag = uvt__load_acquire(&stream->tag);
  if (tag == UVT__TAG(stream, UVT__KIND_STREAM_DONE)) return UV_EPIPE;
  if (tag != UVT__TAG(stream, UVT__KIND_STREAM)) return UV_EINVAL;
  gate = uvt__load_relaxed(&stream->gate);
  do {
    /* Closed for this incarnation: the finish may already be waiting. */
    if (!(gate & UVT__STREAM_GATE_OPEN)) return UV_EPIPE;
    /* Acquire on success: the stream's state (mutex, ring) as opened.
     * The count and the open bit share one word, so no producer gets in
     * once the finish has cleared the bit. */
  } while (!uvt__cas_weak_acquire(&stream->gate, &gate, gate + 1));
  return 0;
}

void uvt__stream_leave(uvt__stream_t* stream) {
  /* Release: everything we did inside happens before the finish sees the
   * count drop. */
  uvt__fetch_sub_release(&stream->gate, 1u);
}

int uvt__stream_on_loop_side(const uvt__stream_t* stream) {
  return uvt__stream_is_open(stream) && uvt__bridge_on_loop_thread(stream->impl);
}

/* Sets SCHEDULED (and extra bits) and queues the message if the bit was
 * clear: then nobody else queues it (top of the file). Any thread while
 * the stream is open; the loop uses uvt__stream_schedule_loop. The bit is
 * handed over by the atomicity of the RMW on one word; acquire: the loop's
 * last writes to the message (its link) happen before we link it again
 * (the loop lets go of the bit with a release). */
static void uvt__stream_schedule(uvt__stream_t* stream, uint64_t extra) {
  uint64_t c = __atomic_fetch_or(&stream->claim, UVT__CLAIM_SCHEDULED | extra, __ATOMIC_ACQ_REL);
  if (!(c & UVT__CLAIM_SCHEDULED)) uvt__bridge_post(stream->impl, &stream->poll.msg);
}

/* Why the loop holds SCHEDULED without the message queued (stream->hold). */
enum {
  UVT__HOLD_NONE = 0, /* it does not: the bit says queued, or it is clear */
  UVT__HOLD_VISITING, /* the message is being delivered: its end decides */
  UVT__HOLD_POLLED,   /* on the bridge's polled list: visited next iteration */
  UVT__HOLD_PARKED    /* paused: a resume (stop, bridge close) queues it */
};

/* Loop thread: schedules a visit, whatever the loop holds. */
static void uvt__stream_schedule_loop(uvt__stream_t* stream, uint64_t extra) {
  switch (stream->hold) {
    case UVT__HOLD_VISITING: /* the visit's end sees the new state */
    case UVT__HOLD_POLLED:   /* visited at the next iteration */
      if (extra != 0) uvt__fetch_or_relaxed(&stream->claim, extra);
      return;
    case UVT__HOLD_PARKED:
      stream->hold = UVT__HOLD_NONE;
      if (extra != 0) uvt__fetch_or_relaxed(&stream->claim, extra);
      uvt__bridge_post(stream->impl, &stream->poll.msg);
      return;
    default:
      uvt__stream_schedule(stream, extra);
  }
}

/* The sole producer's claim: 0 (*pos), UV_EAGAIN if the ring is full,
 * UV_EPIPE once the stream refuses items, UVT__CLAIM_RETRY if the mode
 * changed (SOLE ended, or is being changed). The caller is the generator
 * or the stream's owner. Inside the claim from the store of putting until
 * the publish ends it: whoever ends the mode or the stream waits for that
 * (uvt__stream_unbias). The store of putting, the compiler barrier, then
 * the load of claim: the light side of that handshake (top of the file).
 * Relaxed: the heavy barrier orders them; the release that ends the claim
 * carries the item. */
static int uvt__stream_claim_sole(uvt__stream_t* stream, size_t cap, uint64_t* pos,
                                  uint64_t* seen) {
  uint64_t c, p;
  uvt__store_relaxed(&stream->putting, 1u);
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  *seen = c = uvt__load_relaxed(&stream->claim);
  if ((c & (UVT__CLAIM_REFUSING | UVT__CLAIM_LOCKED | UVT__CLAIM_SOLE)) != UVT__CLAIM_SOLE) {
    /* Only the owner (or the generator) writes putting: an owner keeps
     * that role until it gives it up itself (uvt__stream_claim). */
    uvt__store_release(&stream->putting, 0u);
    return (c & UVT__CLAIM_REFUSING) ? UV_EPIPE : UVT__CLAIM_RETRY;
  }
  /* Nobody else moves tail or seen_head while we own the stream. */
  p = uvt__load_relaxed(&stream->tail);
  if (p - uvt__load_relaxed(&stream->seen_head) >= cap) {
    /* Acquire: pairs with the loop's release of head, so its reads of
     * the slots we may reuse happen before our writes (also for later
     * claims that find room below the head kept here). */
    uint64_t head = uvt__load_acquire(&stream->head);
    if (p - head >= cap) {
      uvt__store_release(&stream->putting, 0u);
      return UV_EAGAIN;
    }
    uvt__store_relaxed(&stream->seen_head, head);
  }
  UVT__TEST_POINT("stream.claim.sole", stream); /* an unbias must wait for us */
  *pos = p;
  return 0;
}

/* A channel's producer, with the LOCKED bit of claim: c, as it set it, is
 * not SOLE and its POS is exact (nobody claims while LOCKED). Makes me the
 * owner, with tail at POS, unless another thread still is (below). */
static void uvt__stream_bias(uvt__stream_t* stream, uint64_t c, uintptr_t me) {
  /* Acquire: pairs with the release of the last owner's give-up, so its
   * last store of putting (0) happens before ours. */
  uintptr_t owner = uvt__load_acquire(&stream->owner);
  if (owner != 0 && owner != me) {
    /* The owner's SOLE was taken back while it may still be about to
     * claim (it read SOLE, then was descheduled): only it may write
     * putting until it has seen SOLE end (uvt__stream_claim), so no other
     * thread becomes the owner before that. Release: as below. */
    __atomic_fetch_and(&stream->claim, ~UVT__CLAIM_LOCKED, __ATOMIC_RELEASE);
    return;
  }
  uvt__store_relaxed(&stream->tail, c & UVT__CLAIM_POS);
  uvt__store_relaxed(&stream->owner, me);
  /* Release: a producer that sees SOLE (acquire) sees its owner and tail.
   * An RMW: the loop may set its bits meanwhile. */
  __atomic_fetch_xor(&stream->claim, UVT__CLAIM_LOCKED | UVT__CLAIM_SOLE, __ATOMIC_RELEASE);
  UVT__TEST_POINT("stream.bias", stream);
}

/* A channel's producer claimed position p with the CAS; c is the value it
 * wrote. Counted only at every UVT__BIAS_SAMPLE-th position, so that a
 * put pays a branch for it: a thread that made UVT__BIAS_AFTER /
 * UVT__BIAS_SAMPLE sampled claims in a row becomes the owner (another
 * producer's claims between two samples go unseen: the role is only a
 * guess, taken back as soon as another producer puts). Relaxed: hints,
 * racy by design between producers; uvt__stream_bias decides under
 * LOCKED. */
static void uvt__stream_count_claim(uvt__stream_t* stream, uint64_t c) {
  uintptr_t me = uvt__producer_self();
  unsigned n;
  if (uvt__load_relaxed(&stream->last_producer) != me) {
    uvt__store_relaxed(&stream->last_producer, me);
    uvt__store_relaxed(&stream->streak, 0u);
    return;
  }
  n = uvt__load_relaxed(&stream->streak) + 1;
  uvt__store_relaxed(&stream->streak, n);
  if (n < UVT__BIAS_AFTER / UVT__BIAS_SAMPLE) return;
  /* Acquire on success: pairs with the release that last cleared LOCKED.
   * Fails if anybody claimed or changed a bit since our claim (the loop
   * lets go of SCHEDULED now and then): then at the next sample. */
  if ((c & (UVT__CLAIM_REFUSING | UVT__CLAIM_LOCKED | UVT__CLAIM_SOLE)) ||
      !__atomic_compare_exchange_n(&stream->claim, &c, c | UVT__CLAIM_LOCKED, 0, __ATOMIC_ACQUIRE,
                                   __ATOMIC_RELAXED))
    return;
  uvt__store_relaxed(&stream->streak, 0u);
  uvt__stream_bias(stream, c, me);
}

/* Takes SOLE back, so that every producer claims with the CAS again (a
 * second producer, or the loop before it drops the buffer or ends the
 * stream). LOCKED, then the heavy barrier: the owner's claim that has not
 * read claim yet (uvt__stream_claim_sole) will see LOCKED, and one that
 * has is marked putting; we wait for it to publish (a few instructions,
 * unless it was descheduled there), then POS is its tail. A change of mode
 * under way (LOCKED) is waited for first. Returns with SOLE clear. Any
 * thread. */
static void uvt__stream_unbias(uvt__stream_t* stream) {
  /* Acquire: pairs with the release that last cleared LOCKED. */
  uint64_t c = uvt__load_acquire(&stream->claim);
  uint64_t tail;
  for (;;) {
    if (c & UVT__CLAIM_LOCKED) {
      uvt__thread_yield(); /* another thread changes the mode */
      c = uvt__load_acquire(&stream->claim);
      continue;
    }
    if (!(c & UVT__CLAIM_SOLE)) return;
    if (__atomic_compare_exchange_n(&stream->claim, &c, c | UVT__CLAIM_LOCKED, 1,
                                    __ATOMIC_ACQUIRE, __ATOMIC_ACQUIRE))
      break;
  }
  c |= UVT__CLAIM_LOCKED;
  UVT__TEST_POINT("stream.unbias", stream);
  uvt__heavy_barrier();
  /* Acquire: pairs with the release that ends a claim, so its tail is seen. */
  while (uvt__load_acquire(&stream->putting)) uvt__thread_yield();
  tail = uvt__load_acquire(&stream->tail);
  /* Release: the owner's tail, read above, is POS from here on. An RMW
   * loop: the loop and the enders set bits meanwhile. */
  while (!__atomic_compare_exchange_n(
      &stream->claim, &c, (c & ~(UVT__CLAIM_SOLE | UVT__CLAIM_LOCKED | UVT__CLAIM_POS)) | tail, 1,
      __ATOMIC_RELEASE, __ATOMIC_RELAXED)) {
  }
}

/* Claims the next position: 0, UV_EAGAIN if the ring is full (nothing
 * changed), UV_EPIPE once the stream refuses items. *how: the claim set
 * SCHEDULED (UVT__CLAIMED_POST: the caller queues the message after it
 * published), or the sole producer claimed (UVT__CLAIMED_SOLE: its
 * publish schedules, uvt__stream_publish_sole). Any thread. */
static int uvt__stream_claim(uvt__stream_t* stream, uint64_t* pos, int* how) {
  /* Relaxed: a reopen may be storing them (stream_open). */
  size_t cap = uvt__load_relaxed(&stream->cap);
  int joined = uvt__load_relaxed(&stream->joined);
  for (;;) {
    uint64_t c, p;
    /* The sole producer (a generator where the heavy barrier exists, or a
     * channel's owner) claims its own way, which checks the mode once it
     * is marked inside; if SOLE is off, with the CAS below (where an owner
     * gives the role up). Relaxed: only this thread makes itself the
     * owner or gives that up, so a thread that reads itself is still the
     * owner. */
    if (joined ? uvt__load_relaxed(&stream->may_bias)
               : uvt__load_relaxed(&stream->owner) != 0 &&
                     uvt__load_relaxed(&stream->owner) == uvt__producer_self()) {
      int rc = uvt__stream_claim_sole(stream, cap, pos, &c);
      if (rc != UVT__CLAIM_RETRY) {
        *how = UVT__CLAIMED_SOLE;
        return rc;
      }
      if (c & UVT__CLAIM_LOCKED) {
        uvt__thread_yield(); /* the mode changes: a heavy barrier, at most once per UVT__BIAS_AFTER */
        continue;
      }
    }
    /* Acquire: the stream as opened (the release of claim in
     * uvt__stream_open heads the release sequence of every change of it),
     * and a SOLE's owner and tail (uvt__stream_bias). */
    c = uvt__load_acquire(&stream->claim);
    p = c & UVT__CLAIM_POS;
    if (c & UVT__CLAIM_REFUSING) return UV_EPIPE;
    if (c & UVT__CLAIM_LOCKED) {
      uvt__thread_yield();
      continue;
    }
    if (c & UVT__CLAIM_SOLE) {
      /* Another thread owns the stream (or it did when we looked above):
       * take SOLE back. */
      uvt__stream_unbias(stream);
      continue;
    }
    if (!joined && uvt__load_relaxed(&stream->owner) != 0 &&
        uvt__load_relaxed(&stream->owner) == uvt__producer_self()) {
      /* SOLE was taken back from us: give the role up. Release: our last
       * store of putting happens before the next owner's. */
      uvt__store_release(&stream->owner, (uintptr_t)0);
    }
    /* Acquire: pairs with the release of seen_head (and of head, below),
     * so the loop's reads of the slot we may reuse happen before our write. */
    if (p - uvt__load_acquire(&stream->seen_head) >= cap) {
      /* Acquire: pairs with the loop's release of head. */
      uint64_t head = uvt__load_acquire(&stream->head);
      if (p - head >= cap) return UV_EAGAIN;
      /* Release: passes the acquire of head on to other producers. The
       * value may go back (a slower producer stores an older head): that
       * only sends a producer here again. */
      uvt__store_release(&stream->seen_head, head);
    }
    /* Acquire on success: as above. The SCHEDULED bit needs no order: see
     * uvt__stream_schedule. A CAS that fails on a reopen's claim of 0 may
     * succeed next round, in the new incarnation: a late put racing a
     * reopen lands there. */
    if (__atomic_compare_exchange_n(&stream->claim, &c, (c + 1) | UVT__CLAIM_SCHEDULED, 1,
                                    __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
      *pos = p;
      *how = (c & UVT__CLAIM_SCHEDULED) ? UVT__CLAIMED : UVT__CLAIMED_POST;
      if ((p & (UVT__BIAS_SAMPLE - 1)) == 0 && !joined && uvt__load_relaxed(&stream->may_bias))
        uvt__stream_count_claim(stream, (c + 1) | UVT__CLAIM_SCHEDULED);
      return 0;
    }
  }
}

/* The sole producer published position pos: moves tail past it and makes
 * sure the loop visits, then ends its claim. Outside FAST that takes an
 * RMW on claim, a Dekker handshake with the loop's let-go through claim's
 * single modification order: if ours comes first, the loop's acquiring
 * RMW reads from it and its load of tail sees ours; if the loop's comes
 * first, we find SCHEDULED clear and queue the message. In FAST the loop
 * holds SCHEDULED and visits without being asked, so a put is plain
 * stores: the locked instruction was a third of what an item cost the
 * generator. The claim ends last: a channel's end waits for it (the
 * final callback may free the stream), so nothing here touches the stream
 * after it. */
static void uvt__stream_publish_sole(uvt__stream_t* stream, uint64_t pos) {
  uint64_t c;
  /* Release: a loop that reads tail (acquire) finds every item below it
   * published. */
  uvt__store_release(&stream->tail, pos + 1);
  /* The light side of the asymmetric barrier (uvt__heavy_barrier): the
   * compiler keeps the load of claim after the store of tail. The loop
   * clears FAST, then runs the heavy barrier, then reads tail: either this
   * load is after the barrier and sees FAST clear, or our store of tail
   * was before it and the loop sees it. Relaxed: the barrier orders it. */
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  c = uvt__load_relaxed(&stream->claim);
  if (!(c & UVT__CLAIM_FAST)) {
    /* Acq_rel: the handshake above; acquire also as in
     * uvt__stream_schedule (the loop's writes to the message happen
     * before we link it). */
    c = __atomic_fetch_or(&stream->claim, UVT__CLAIM_SCHEDULED, __ATOMIC_ACQ_REL);
    if (!(c & UVT__CLAIM_SCHEDULED)) uvt__bridge_post(stream->impl, &stream->poll.msg);
  }
  /* Release: an unbias that sees the claim end (acquire) sees tail. */
  uvt__store_release(&stream->putting, 0u);
}

/* Writes the item into its claimed slot and publishes it, then queues the
 * message if the claim set SCHEDULED (after the publish: the visit it
 * causes finds the item). A blocking put on the loop thread is refused
 * here, after its claim (which keeps the stream and its bridge alive for
 * the check): its slot is published empty. */
static int uvt__stream_fill(uvt__stream_t* stream, uint64_t pos, int how, void* item,
                            int refuse_loop) {
  size_t slot = pos & stream->mask;
  int rc = 0;
  if (refuse_loop && uvt__bridge_on_loop_thread(stream->impl)) {
    item = UVT__VOID_ITEM;
    rc = UV_EBUSY;
  }
  /* Asks for the lines of later items for writing, 4 item lines and a lap
   * line ahead (the loop last read them a lap ago). Our stores then find
   * their lines ours: the next claim's locked instruction waits for our
   * stores to complete, and a line still on the loop's core made that a
   * round trip between the cores per line (slow host mode, buffer of
   * 1024: 26 -> 37 M items/s). */
  if ((slot & 7) == 0) {
    uvt__prefetch_write(&stream->ring[(pos + 32) & stream->mask]);
    if ((slot & 63) == 0) uvt__prefetch_write(&stream->laps[(pos + 64) & stream->mask]);
  }
  stream->ring[slot] = item;
  UVT__TEST_POINT("stream.fill", stream); /* claimed, not yet published */
  /* Release: the item is written before the loop sees the slot published. */
  uvt__store_release(&stream->laps[slot], uvt__stream_lap(stream, pos));
  if (how == UVT__CLAIMED_SOLE)
    uvt__stream_publish_sole(stream, pos);
  else if (how == UVT__CLAIMED_POST)
    uvt__bridge_post(stream->impl, &stream->poll.msg);
  return rc;
}

/* Loop thread: the item at pos once it is published, else 0. */
static int uvt__stream_slot_ready(const uvt__stream_t* stream, uint64_t pos, void** item) {
  size_t slot = pos & stream->mask;
  /* Acquire: pairs with the producer's release, so the item is written. */
  if (uvt__load_acquire(&stream->laps[slot]) != uvt__stream_lap(stream, pos)) return 0;
  *item = stream->ring[slot];
  return 1;
}

/* Commits the items of the current batch already passed to the callback,
 * and wakes producers waiting for space. Loop thread. */
static void uvt__stream_commit(uvt__stream_t* stream) {
  size_t taken = stream->taken;
  if (taken == 0) return;
  stream->taken = 0;
  /* Release: our reads of the slots happen before producers refill them. */
  uvt__store_release(&stream->head, stream->head + taken);
  /* Seq_cst: head before the read of waiters (top of the file). */
  uvt__fence_seq_cst();
  if (uvt__load_relaxed(&stream->waiters) > 0) {
    /* With two CPUs the broadcast comes under the mutex: the woken are
     * let in one at a time (after the unlock, eight producers woken at
     * once fought the loop for the mutex: buffer of 256, 25.9 -> 7.1 M
     * items/s, six interleaved probes; waking one of them instead: 27 ->
     * 16 M). On one CPU a woken producer preempts us and would find the
     * mutex still held, so the wake-up comes after the unlock. A counted
     * waiter holds the mutex from its last look at head until its wait
     * releases it, so once we got the mutex it either saw the new head or
     * waits, and the wake-up finds it (eight producers at a buffer of 256:
     * 297,000 -> 137,000 context switches for 4 M items, 3.3 -> 5.5 M
     * items/s). And on one CPU it wakes one producer, not all: the one
     * runs until the buffer is full again, while the others, woken, would
     * each preempt it only to find it full (eight producers at 256: 6.4
     * -> 15 M items/s, 140,000 -> 62,000 switches; at 16: 0.45 -> 1.25 M).
     * Nobody sleeps on with room: every woken producer claims (or finds
     * the room taken by one that was awake), and each item it puts brings
     * a visit whose commit wakes the next; a stop or a close wakes all. */
    if (uvt__spin_pays()) {
      uv_mutex_lock(&stream->mutex);
      uv_cond_broadcast(&stream->space);
      uv_mutex_unlock(&stream->mutex);
    } else {
      uv_mutex_lock(&stream->mutex);
      uv_mutex_unlock(&stream->mutex);
      uv_cond_signal(&stream->space);
    }
  }
}

/* Whether the final callback is due, and with which status. Lock held. */
static int uvt__stream_final_due(const uvt__stream_t* stream, int* status) {
  if (stream->lflags & UVT__STREAM_FINISHED) return 0;
  if (uvt__load_relaxed(&stream->waiters) > 0) return 0;
  if (stream->joined && !(stream->flags & UVT__STREAM_PRODUCER_DONE))
    return 0;
  if (stream->lflags & UVT__STREAM_STOPPED) {
    *status = UV_ECANCELED;
    return 1;
  }
  if (uvt__stream_buffered(stream) > 0) return 0;
  if (stream->lflags & UVT__STREAM_BRIDGE_CLOSING) {
    *status = UV_ECANCELED;
    return 1;
  }
  if (stream->lflags & UVT__STREAM_PAUSED) return 0;
  if (stream->joined) {
    *status = stream->status < 0 ? stream->status : UV_EOF;
    return 1;
  }
  if (stream->flags & UVT__STREAM_CLOSED) {
    *status = UV_EOF;
    return 1;
  }
  return 0;
}

/* Loop thread, FINISHED already set under the lock: no producer touches the
 * ring or the bridge through this stream any more. */
static void uvt__stream_finish(uvt__stream_t* stream, int status) {
  /* Close the gate, then wait out the producers inside: they find the
   * stream finished and leave at once. Relaxed: the wait's acquire loads
   * order what follows. */
  uvt__fetch_and_relaxed(&stream->gate, ~UVT__STREAM_GATE_OPEN);
  UVT__TEST_POINT("stream.finish", stream); /* producers may be inside */
  /* Acquire: pairs with the leaves' release. */
  while (uvt__load_acquire(&stream->gate) != 0) uvt__thread_yield();
  uvt__bridge_untrack(stream->impl, &stream->inflight);
  uvt__free(stream->ring);
  stream->ring = NULL;
  /* Release: a producer that sees the finished tag sees the state above. */
  uvt__store_release(&stream->tag, UVT__TAG(stream, UVT__KIND_STREAM_DONE));
  uvt__bridge_before_callback(stream->impl);
  stream->deliver(stream, status, NULL); /* may free the stream's owner */
}

/* Half the buffer: what makes a polled stream worth a visit, and the
 * most the loop waits for at a time within one (loop thread). */
static uint64_t uvt__stream_half(const uvt__stream_t* stream) { return (stream->cap + 1) / 2; }

/* The polled stream is worth a visit: half its buffer is published (a
 * producer may be waiting for space). Only the slot that makes it half is
 * read, not claim: the loop asks often while it waits, and claim's line is
 * the one producers write for every item, while that slot's line is
 * written once, when they get there. A stream that refuses items is
 * visited when the wait times out. Relaxed: a hint; the visit reads the
 * slots with acquire. */
static int uvt__stream_ready(uvt__poll_t* poll) {
  uvt__stream_t* stream = uvt__container_of(poll, uvt__stream_t, poll);
  uint64_t target = stream->head + uvt__stream_half(stream) - 1;
  return uvt__load_relaxed(&stream->laps[target & stream->mask]) == uvt__stream_lap(stream, target);
}

/* The next chunk of a flood: at most this many items, waited for at most
 * UVT__CHUNK_BASE_NS plus UVT__CHUNK_ITEM_NS an item, at most
 * UVT__CHUNK_WAIT_NS, and all the chunks of a visit at most
 * UVT__VISIT_WAIT_NS. A chunk of one item (a buffer of 1 or 2) is a round
 * trip between the cores, about a microsecond: the shorter wait keeps a
 * stream that trickles into a tiny buffer from costing the loop a long
 * wait per item. */
#define UVT__CHUNK_MAX 128u
#define UVT__CHUNK_BASE_NS 2000u
#define UVT__CHUNK_ITEM_NS 100u
#define UVT__CHUNK_WAIT_NS 10000u
#define UVT__VISIT_WAIT_NS 50000u

/* Items the loop waits for at a time in a flood (loop thread). */
static uint64_t uvt__stream_chunk(const uvt__stream_t* stream) {
  uint64_t half = uvt__stream_half(stream);
  return half < UVT__CHUNK_MAX ? half : UVT__CHUNK_MAX;
}

/* Loop thread, in a flood (the visit has delivered a chunk): waits for
 * the next chunk, or what is left of the budget, to be published; then
 * *end is its end. Staying in the visit saves a loop iteration (an
 * epoll_wait and the prepare's wait) per chunk, which from small buffers
 * was most of what an item cost the loop, and producers find room sooner.
 * A chunk that does not come in time (above) ends the visit (the bridge
 * polls the stream, as before); *until bounds the waits of the whole
 * visit, so a stream keeps the loop spinning at most UVT__VISIT_WAIT_NS an
 * iteration. The items taken so far are committed first: producers get
 * all the room there is. */
static int uvt__stream_wait_chunk(uvt__stream_t* stream, uint64_t pos, unsigned room,
                                  uint64_t* until, uint64_t* end) {
  uint64_t n = uvt__stream_chunk(stream);
  uint64_t target, now, limit;
  void* item;
  if (room < n) n = room;
  /* On one CPU the producers cannot publish while we wait: the visit
   * ends, and the loop's next iteration yields to them (bridge.c). */
  if (n == 0 || !uvt__spin_pays()) return 0;
  target = pos + n - 1;
  uvt__stream_commit(stream);
  now = uv_hrtime();
  if (*until == 0) *until = now + UVT__VISIT_WAIT_NS;
  if (now >= *until) return 0;
  limit = UVT__CHUNK_BASE_NS + n * UVT__CHUNK_ITEM_NS;
  if (limit > UVT__CHUNK_WAIT_NS) limit = UVT__CHUNK_WAIT_NS;
  if (limit > *until - now) limit = *until - now;
  UVT__SPIN_WHILE(!uvt__stream_slot_ready(stream, target, &item), limit);
  if (!uvt__stream_slot_ready(stream, target, &item)) return 0;
  *end = target + 1;
  return 1;
}

/* The loop's visit, while it holds SCHEDULED. In a flood it keeps holding
 * it and polls the stream (producers then queue nothing); it lets go when a
 * visit finds nothing new. */
static unsigned uvt__stream_deliver_msg(uvt__msg_t* msg, unsigned budget) {
  uvt__stream_t* stream = uvt__container_of(msg, uvt__stream_t, poll.msg);
  uint64_t end, c, claimed;
  void* item;
  size_t commit_every;
  unsigned used = 0;
  uint64_t until = 0; /* the end of the visit's waits for chunks, once one began */
  int status;

  if (stream->lflags & UVT__STREAM_FINISHED) return 0;
  stream->hold = UVT__HOLD_VISITING;
  /* The slots' lap bytes order their items (uvt__stream_claimed). */
  end = uvt__stream_claimed(stream);

  /* Commit every quarter buffer, so that producers refill the freed slots
   * while the rest of the batch is delivered (the bound stays exact: only
   * items already passed to the callback are released). */
  commit_every = stream->cap / 4 > 0 ? stream->cap / 4 : 1;
  /* On one CPU producers cannot refill meanwhile: each commit would only
   * wake them to fight over a quarter buffer (uvt__spin_pays). */
  if (!uvt__spin_pays()) commit_every = stream->cap;
  /* stream->taken: the batch so far, a kept one included (below). */
  while (used < budget && uvt__stream_deliverable(stream)) {
    uint64_t pos = stream->head + stream->taken;
    if (pos >= end && !(used >= uvt__stream_chunk(stream) &&
                        uvt__stream_wait_chunk(stream, pos, budget - used, &until, &end)))
      break;
    if (!uvt__stream_slot_ready(stream, pos, &item)) {
      /* Its producer is between its claim and its publish: mostly a few
       * instructions away, unless it was descheduled there. */
      UVT__SPIN_WHILE(!uvt__stream_slot_ready(stream, pos, &item), UVT__UNPUBLISHED_SPIN_NS);
      if (!uvt__stream_slot_ready(stream, pos, &item)) break;
    }
    /* The line a few items on: it comes from the producers' core. */
    if ((pos & 7) == 0) __builtin_prefetch(&stream->ring[(pos + 32) & stream->mask], 0, 3);
    stream->taken++;
    used++;
    if (item != UVT__VOID_ITEM) {
      uvt__bridge_before_callback(stream->impl);
      stream->deliver(stream, 0, item);
    }
    if (stream->taken >= commit_every) uvt__stream_commit(stream);
  }
  /* On one CPU, a visit that stops at its budget with at least another
   * budget's worth of items claimed keeps its batch: the next visit (the
   * stream is polled, below) goes on with it, and its commit releases the
   * room and wakes the producers. Committed here, the room would bring
   * each producer back to refill a budget's worth of slots, preempting the
   * loop, where a hand-written ring switches once per buffer (buffer of
   * 4096, one CPU: 8 producers 19 -> 38 M items/s, context switches
   * 34,000 -> 7,700 for 4 M items; one producer 3,900 context switches, as
   * the ring). With less left than that, the room is worth the switch (a
   * buffer of 1024 kept 24 items for a second visit: 1.69x -> 1.23x the
   * ring). The kept items still count against max_size, until the next
   * iteration (a loop stopped in between keeps them). A visit that
   * delivers nothing (paused) still commits what was kept. */
  if (uvt__spin_pays() || used < budget || end - (stream->head + stream->taken) < budget ||
      !uvt__stream_deliverable(stream))
    uvt__stream_commit(stream);
  else
    UVT__TEST_POINT("stream.batch.kept", stream);
  stream->since_barrier += used;

  if (!uvt__stream_deliverable(stream) && !(stream->lflags & UVT__STREAM_STOPPED)) {
    stream->hold = UVT__HOLD_PARKED; /* paused */
    return used;
  }
  /* Poll on in a flood (unless no more can come: then the end may be due
   * now), or for a slot not yet published. Relaxed, as above. */
  if (uvt__stream_deliverable(stream) &&
      (stream->head < end ||
       (used > 0 && !(uvt__load_relaxed(&stream->claim) & UVT__CLAIM_REFUSING)))) {
    stream->hold = UVT__HOLD_POLLED;
    uvt__bridge_poll(stream->impl, &stream->poll);
    if (stream->since_barrier >= UVT__FAST_AFTER &&
        (uvt__load_relaxed(&stream->claim) & (UVT__CLAIM_SOLE | UVT__CLAIM_FAST)) ==
            UVT__CLAIM_SOLE) {
      uvt__fetch_or_relaxed(&stream->claim, UVT__CLAIM_FAST); /* the barrier orders it */
      UVT__TEST_POINT("stream.fast.enter", stream);
    }
    return used;
  }

  /* Nothing new: let go of SCHEDULED, so that the next claim queues the
   * message. Release: our writes to the message (the bridge linked it)
   * happen before a claim's acquire finds the bit clear and links it
   * again. Items claimed before this (their claims queued nothing) need
   * another visit. Out of FAST first: once the heavy barrier returns,
   * every put that found FAST set has its tail visible to us, and later
   * ones take the RMW. Acquire: the sole producer's handshake
   * (uvt__stream_publish_sole). */
  stream->hold = UVT__HOLD_NONE;
  if (uvt__load_relaxed(&stream->claim) & UVT__CLAIM_FAST) {
    uvt__fetch_and_relaxed(&stream->claim, ~UVT__CLAIM_FAST); /* the barrier orders it */
    uvt__heavy_barrier();
    stream->since_barrier = 0;
    UVT__TEST_POINT("stream.fast.leave", stream);
  }
  c = __atomic_fetch_and(&stream->claim, ~UVT__CLAIM_SCHEDULED, __ATOMIC_ACQ_REL);
  claimed = (c & UVT__CLAIM_SOLE) ? uvt__load_acquire(&stream->tail) : c & UVT__CLAIM_POS;
  if ((c & UVT__CLAIM_REFUSING) && (c & (UVT__CLAIM_SOLE | UVT__CLAIM_LOCKED)) &&
      !stream->joined) {
    /* A channel's owner may be inside a claim that passed its check
     * before REFUSING, unseen in tail: the end must wait for its item (the
     * final callback may free the stream; a generator's end waits for the
     * generator instead). From here on every claim is a CAS, and fails.
     * Relaxed: the unbias's own RMW on claim ordered it. */
    uvt__stream_unbias(stream);
    claimed = uvt__load_relaxed(&stream->claim) & UVT__CLAIM_POS;
  }
  if (claimed != stream->head && uvt__stream_deliverable(stream)) {
    uvt__stream_schedule_loop(stream, 0);
    return used;
  }
  /* The end can only be due once the stream refuses items (every ending
   * sets REFUSING under the mutex, then schedules). */
  if (!(c & UVT__CLAIM_REFUSING)) return used;
  uv_mutex_lock(&stream->mutex);
  /* Finish only while our message is not queued again (a state change
   * since we let go queued it, under this lock): the final callback may
   * free the stream. */
  if (!(uvt__load_relaxed(&stream->claim) & UVT__CLAIM_SCHEDULED) &&
      uvt__stream_final_due(stream, &status)) {
    stream->lflags |= UVT__STREAM_FINISHED;
    uv_mutex_unlock(&stream->mutex);
    uvt__stream_finish(stream, status);
    return used + 1;
  }
  uv_mutex_unlock(&stream->mutex);
  return used;
}

/* Loop thread: waits for the items claimed before pos to be published, and
 * passes them to drop (or discards them). */
static void uvt__stream_drop_to(uvt__stream_t* stream, uint64_t end, uvt_drop_cb drop) {
  while (stream->head < end) {
    void* item;
    /* A producer between its claim and its publish: a few instructions,
     * unless it was descheduled there. */
    while (!uvt__stream_slot_ready(stream, stream->head, &item)) uvt__thread_yield();
    /* Release: our read of the slot happens before a producer refills it. */
    uvt__store_release(&stream->head, stream->head + 1);
    if (drop != NULL && item != UVT__VOID_ITEM) drop(item);
  }
}

/* The bridge is closing (two stages, bridge.h): first the owner withdraws
 * a producer that has not started (an iterator's generator still queued);
 * then producers are refused, which ends a running generator, the buffer
 * is still delivered (also while paused), and the stream ends with
 * UV_ECANCELED. */
static void uvt__stream_bridge_closing(uvt__inflight_t* node, int stage) {
  uvt__stream_t* stream = uvt__container_of(node, uvt__stream_t, inflight);
  if (stage == UVT__CLOSE_WITHDRAW) {
    if (stream->closing != NULL) stream->closing(stream);
    return;
  }
  uv_mutex_lock(&stream->mutex);
  stream->lflags |= UVT__STREAM_BRIDGE_CLOSING;
  if (uvt__load_relaxed(&stream->waiters) > 0) uv_cond_broadcast(&stream->space);
  uvt__stream_schedule_loop(stream, UVT__CLAIM_REFUSING);
  uv_mutex_unlock(&stream->mutex);
}

int uvt__stream_open(uvt__bridge_impl_t* impl, uvt__stream_t* stream, size_t max_size,
                     uvt__stream_deliver_cb deliver, uvt__stream_closing_cb closing,
                     int joins_producer) {
  void** ring;
  size_t slots = 1;
  unsigned shift = 0;
  int rc;
  if (uvt__stream_is_open(stream)) return UV_EBUSY;
  if (max_size > SIZE_MAX / 2 / (sizeof(void*) + 1)) return UV_ENOMEM;
  while (slots < max_size) {
    slots <<= 1;
    shift++;
  }
  /* One block: the items, then the lap bytes (0: position 0 needs 1). */
  ring = uvt__malloc(slots * (sizeof(void*) + 1));
  if (ring == NULL) return UV_ENOMEM;
  memset(ring + slots, 0, slots);
  /* Always initialised afresh: memory reused since a finish may still carry
   * the finished tag while its mutex bytes were overwritten. (A finished
   * stream never destroys them: its final callback may reopen it; on the
   * platforms libuv supports, pthread mutexes and condvars hold no
   * resources until used.) No producer is inside a finished stream's gate,
   * so none holds this mutex (see the top of the file). */
  if ((rc = uv_mutex_init(&stream->mutex)) != 0) goto fail;
  if ((rc = uv_cond_init(&stream->space)) != 0) {
    uv_mutex_destroy(&stream->mutex);
    goto fail;
  }
  /* A late producer of the last incarnation may still read cap, joined,
   * head, seen_head and claim before its claim fails (relaxed atomics);
   * everything else it reads only after a claim, which acquires the
   * release store of claim below. */
  stream->ring = ring;
  stream->laps = (unsigned char*)(ring + slots);
  uvt__store_relaxed(&stream->cap, max_size);
  stream->mask = slots - 1;
  stream->shift = shift;
  uvt__store_relaxed(&stream->seen_head, (uint64_t)0);
  uvt__store_relaxed(&stream->head, (uint64_t)0);
  uvt__store_relaxed(&stream->tail, (uint64_t)0);
  uvt__store_relaxed(&stream->putting, 0u);
  stream->taken = 0;
  stream->since_barrier = 0;
  stream->waiters = 0;
  stream->flags = 0;
  stream->lflags = 0;
  stream->hold = UVT__HOLD_NONE;
  uvt__store_relaxed(&stream->joined, joins_producer);
  uvt__store_relaxed(&stream->may_bias, uvt__heavy_barrier_ready());
  /* A channel's owner of the last incarnation keeps its role (it may
   * still be about to claim: uvt__stream_bias); fresh memory has none. */
  if (uvt__load_relaxed(&stream->tag) != UVT__TAG(stream, UVT__KIND_STREAM_DONE))
    uvt__store_relaxed(&stream->owner, (uintptr_t)0);
  uvt__store_relaxed(&stream->last_producer, (uintptr_t)0);
  uvt__store_relaxed(&stream->streak, 0u);
  stream->status = 0;
  stream->ctx = uvt__context_current();
  stream->impl = impl;
  stream->deliver = deliver;
  stream->closing = closing;
  stream->poll.msg.deliver = uvt__stream_deliver_msg;
  stream->poll.ready = uvt__stream_ready;
  stream->inflight.closing = uvt__stream_bridge_closing;
  uvt__bridge_track(impl, &stream->inflight);
  /* Release: a claim sees the stream as opened (above). A generator is
   * its stream's sole producer from the start. */
  uvt__store_release(&stream->claim, joins_producer && uvt__heavy_barrier_ready()
                                         ? UVT__CLAIM_SOLE
                                         : (uint64_t)0);
  /* A finished stream's gate is closed and empty, and nobody enters a
   * closed gate: this store races with no producer. */
  uvt__store_relaxed(&stream->gate, UVT__STREAM_GATE_OPEN);
  /* Release: producers that see the open tag see the state above. */
  uvt__store_release(&stream->tag, UVT__TAG(stream, UVT__KIND_STREAM));
  return 0;

fail:
  uvt__free(ring);
  return rc;
}

void uvt__stream_discard(uvt__stream_t* stream) {
  uvt__bridge_untrack(stream->impl, &stream->inflight);
  uvt__free(stream->ring);
  stream->ring = NULL;
  uvt__store_relaxed(&stream->gate, 0u);
  uvt__store_release(&stream->tag, (uintptr_t)0);
  uv_cond_destroy(&stream->space);
  uv_mutex_destroy(&stream->mutex);
}

/* Producer side, inside the gate (or the producer a stream joins): the
 * buffer is full and not refusing. The loop frees a quarter of the buffer
 * at a time; waiting for that briefly saves the sleep's two context
 * switches, and spinning outside the mutex and uncounted in waiters spares
 * the loop a lock and a broadcast at each commit (buffer of 16, one
 * generator: 4.9 -> 8.4 M items/s). The final callback, which may free the
 * stream, waits for the gate or the producer's end, so the spinner reads a
 * live stream; every ending sets REFUSING, which ends the spin. Relaxed:
 * a hint; the claim that follows decides. */
static int uvt__stream_full(const uvt__stream_t* stream) {
  uint64_t c = uvt__load_relaxed(&stream->claim);
  if (c & UVT__CLAIM_REFUSING) return 0;
  return uvt__stream_claimed(stream) - uvt__load_relaxed(&stream->head) >=
         uvt__load_relaxed(&stream->cap);
}

/* A put that found the ring full and may wait: under the mutex, counted in
 * waiters while it sleeps. Returns with a claim (0, *pos, *how), or
 * UV_EPIPE or full_err. */
static int uvt__stream_wait_claim(uvt__stream_t* stream, uint64_t timeout_ms, int full_err,
                                  uint64_t* pos, int* how) {
  uint64_t deadline = 0;
  int waited = 0;
  int rc;
  if (timeout_ms != UINT64_MAX) deadline = uvt__deadline_after_ms(timeout_ms);
  uv_mutex_lock(&stream->mutex);
  UVT__TEST_POINT("stream.put.locked", stream); /* the loop may finish the stream */
  for (;;) {
    if (uvt__stream_refusing(stream)) {
      rc = UV_EPIPE;
      break;
    }
    if ((rc = uvt__stream_claim(stream, pos, how)) != UV_EAGAIN) break;
    /* Counted, then a fence, then the last look at head: the loop moves
     * head, fences, then reads waiters, so either it sees us or we see
     * head moved (and it wakes us under the mutex we hold until we wait). */
    uvt__fetch_add_seq_cst(&stream->waiters, 1u);
    uvt__fence_seq_cst();
    waited = 1;
    if (uvt__stream_claimed(stream) - uvt__load_acquire(&stream->head) < stream->cap ||
        uvt__stream_refusing(stream)) {
      uvt__fetch_sub_seq_cst(&stream->waiters, 1u);
      continue;
    }
    if (timeout_ms == UINT64_MAX || deadline == UINT64_MAX) {
      uv_cond_wait(&stream->space, &stream->mutex);
    } else {
      uint64_t now = uv_hrtime();
      if (now >= deadline ||
          uv_cond_timedwait(&stream->space, &stream->mutex, deadline - now) == UV_ETIMEDOUT) {
        uvt__fetch_sub_seq_cst(&stream->waiters, 1u);
        if ((rc = uvt__stream_claim(stream, pos, how)) != UV_EAGAIN) break;
        if (uvt__stream_refusing(stream)) continue;
        rc = full_err;
        break;
      }
    }
    uvt__fetch_sub_seq_cst(&stream->waiters, 1u);
  }
  /* The last producer leaving a refusing stream may be what its end waits for. */
  if (waited && uvt__load_relaxed(&stream->waiters) == 0 && rc == UV_EPIPE &&
      !(stream->lflags & UVT__STREAM_FINISHED))
    uvt__stream_schedule(stream, 0);
  uv_mutex_unlock(&stream->mutex);
  return rc;
}

int uvt__stream_put(uvt__stream_t* stream, void* item, uint64_t timeout_ms, int full_err,
                    int refuse_loop) {
  uint64_t pos;
  int how;
  int rc;
  int joined;
  uintptr_t tag;
  (void)UVT__TAG_READ(stream->tag);
  /* Acquire: pairs with the release stores of the tag, so an open tag
   * shows the stream as opened. */
  tag = uvt__load_acquire(&stream->tag);
  if (tag == UVT__TAG(stream, UVT__KIND_STREAM_DONE)) return UV_EPIPE;
  if (tag != UVT__TAG(stream, UVT__KIND_STREAM)) return UV_EINVAL;

  /* With room, a claim is all it takes (top of the file). */
  rc = uvt__stream_claim(stream, &pos, &how);
  if (rc == 0) return uvt__stream_fill(stream, pos, how, item, refuse_loop);
  if (rc != UV_EAGAIN) return rc;
  if (timeout_ms == 0 && !refuse_loop) return full_err;

  /* Full: spin briefly, then wait under the mutex, inside the gate (a
   * stream that joins its one producer needs no gate: its end waits for
   * the producer). */
  joined = uvt__load_relaxed(&stream->joined); /* a reopen may be storing it */
  if (!joined && (rc = uvt__stream_enter(stream)) != 0) return rc;
  if (refuse_loop && uvt__bridge_on_loop_thread(stream->impl))
    rc = UV_EBUSY;
  else if (timeout_ms == 0)
    rc = full_err;
  else {
    UVT__TEST_POINT("stream.put.spin", stream); /* the stream may end here */
    /* The spin yields the CPU every few microseconds. With more threads
     * than CPUs (producers beside the loop), a producer that spun its 10
     * us through held a CPU that the loop, or a producer between its
     * claim and its publish, was waiting for; the buffer stayed full, so
     * the spinners went to sleep and the loop's commits had to wake them
     * (8 producers, a buffer of 4096, 4 M items: 7,600 -> 130 producer
     * sleeps, 30 -> 70 M items/s. Same-run medians of 3, 4 and 8
     * producers at buffers of 1-4096: 0.98x-2.4x the items/s, every cell
     * but one 1.09x or more; 1 and 2 producers and the iterator
     * unchanged). */
    UVT__SPIN_WHILE_YIELDING(uvt__stream_full(stream), UVT__PUT_SPIN_NS, 1);
    rc = uvt__stream_claim(stream, &pos, &how);
    if (rc == UV_EAGAIN) rc = uvt__stream_wait_claim(stream, timeout_ms, full_err, &pos, &how);
  }
  if (rc == 0) rc = uvt__stream_fill(stream, pos, how, item, refuse_loop);
  if (!joined) uvt__stream_leave(stream);
  return rc;
}

int uvt__stream_close(uvt__stream_t* stream) {
  int rc = 0;
  uv_mutex_lock(&stream->mutex);
  if (uvt__stream_refusing(stream)) {
    rc = UV_EPIPE;
  } else {
    stream->flags |= UVT__STREAM_CLOSED;
    if (uvt__load_relaxed(&stream->waiters) > 0) uv_cond_broadcast(&stream->space);
    uvt__stream_schedule(stream, UVT__CLAIM_REFUSING);
  }
  uv_mutex_unlock(&stream->mutex);
  return rc;
}

int uvt__stream_producer_may_start(uvt__stream_t* stream) {
  int run;
  uv_mutex_lock(&stream->mutex);
  run = !(stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_BRIDGE_CLOSING));
  uv_mutex_unlock(&stream->mutex);
  return run;
}

void uvt__stream_producer_done(uvt__stream_t* stream, int status) {
  uv_mutex_lock(&stream->mutex);
  stream->status = status;
  stream->flags |= UVT__STREAM_PRODUCER_DONE;
  uvt__stream_schedule(stream, UVT__CLAIM_REFUSING);
  uv_mutex_unlock(&stream->mutex);
}

int uvt__stream_pause(uvt__stream_t* stream, int pause) {
  uv_mutex_lock(&stream->mutex);
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) {
    uv_mutex_unlock(&stream->mutex);
    return UV_EINVAL; /* stopped or finished: not open any more */
  }
  if (pause) {
    stream->lflags |= UVT__STREAM_PAUSED;
  } else if (stream->lflags & UVT__STREAM_PAUSED) {
    stream->lflags &= ~(unsigned)UVT__STREAM_PAUSED;
    uvt__stream_schedule_loop(stream, 0);
  }
  uv_mutex_unlock(&stream->mutex);
  return 0;
}

int uvt__stream_stop(uvt__stream_t* stream, uvt_drop_cb drop) {
  uint64_t c, end;
  /* Stopped from inside the callback: what it was given is delivered. */
  uvt__stream_commit(stream);
  uv_mutex_lock(&stream->mutex);
  if (stream->lflags & (UVT__STREAM_STOPPED | UVT__STREAM_FINISHED)) {
    uv_mutex_unlock(&stream->mutex);
    return UV_EINVAL;
  }
  stream->lflags |= UVT__STREAM_STOPPED;
  /* Relaxed: what was claimed up to now is dropped below (its slots'
   * lap bytes order the items); later claims fail. */
  c = uvt__fetch_or_relaxed(&stream->claim, UVT__CLAIM_REFUSING);
  end = c & UVT__CLAIM_POS;
  if (uvt__load_relaxed(&stream->waiters) > 0) uv_cond_broadcast(&stream->space);
  uv_mutex_unlock(&stream->mutex);
  if (c & (UVT__CLAIM_SOLE | UVT__CLAIM_LOCKED)) {
    /* The sole producer claims without a CAS that could fail: take SOLE
     * back, which waits for a claim that passed its check (top of the
     * file); then POS is exact, and later claims fail. Relaxed: the
     * unbias's own RMW on claim ordered it. */
    uvt__stream_unbias(stream);
    end = uvt__load_relaxed(&stream->claim) & UVT__CLAIM_POS;
  }

  /* Drop outside the lock, so that drop may call back into the library. */
  uvt__stream_drop_to(stream, end, drop);

  uv_mutex_lock(&stream->mutex);
  uvt__stream_schedule_loop(stream, 0); /* the final callback, once producers left */
  uv_mutex_unlock(&stream->mutex);
  return 0;
}

void uvt__stream_set_ref(uvt__stream_t* stream, int ref) {
  int refusing;
  if (!uvt__stream_on_loop_side(stream)) return;
  uv_mutex_lock(&stream->mutex);
  refusing = uvt__stream_refusing(stream);
  uv_mutex_unlock(&stream->mutex);
  if (!refusing) uvt__bridge_set_ref(stream->impl, &stream->inflight, ref);
}
