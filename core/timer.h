/*
 * timer.h -- one min-heap of deadlines, served by its own thread or driven
 * by the scheduler's idle poll (braid_timerq_new_driven).
 *
 * Design notes
 *
 * Sleeps, select timeouts of suspended tasks, braid.after and braid.ticker
 * are timers.  A timer is an intrusive record (the caller owns its memory)
 * holding a deadline, a callback and its heap slot, so both adding and
 * cancelling are O(log n).  The timer thread sleeps on a condition variable
 * until the earliest deadline, pops due timers, and runs their callbacks
 * without holding the heap lock; a callback may add timers (a ticker re-adds
 * itself).
 *
 * braid_timer_cancel() is synchronous, like the kernel's del_timer_sync: if
 * the callback is running at that moment it waits for it to return, so the
 * timer's memory can be reused as soon as cancel returns.  Never cancel a
 * timer from its own callback.
 */
#ifndef BRAID_TIMER_H
#define BRAID_TIMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct braid_timer braid_timer_t;
typedef struct braid_timerq braid_timerq_t;
typedef void (*braid_timer_fn)(braid_timer_t *t);

struct braid_timer {
  int64_t t_deadline;       /* under the queue's lock while queued */
  braid_timer_fn t_cb;      /* called on the timer thread, no lock held */
  void *t_data;             /* for the callback */
  size_t t_slot;            /* heap index + 1; 0 when not queued */
  uint64_t t_seq;           /* insertion order: equal deadlines fire FIFO */
};

/* Creates a timer queue and starts its thread.  Returns NULL on failure. */
braid_timerq_t *braid_timerq_new(void);

/* A queue with no thread of its own: whoever polls (the scheduler's idle
 * workers) sleeps until braid_timerq_next() and calls braid_timerq_run().
 * kick, when set, is called (outside the queue's lock) whenever a timer
 * becomes the earliest, so that a sleeping poller wakes to re-read it. */
typedef void (*braid_timerq_kick_fn)(void *arg);
braid_timerq_t *braid_timerq_new_driven(void);
void braid_timerq_set_kick(braid_timerq_t *q, braid_timerq_kick_fn kick, void *arg);

/* The earliest deadline queued (BRAID_FOREVER when none), lock-free. */
int64_t braid_timerq_next(braid_timerq_t *q);

/* Runs the callbacks of the timers due at now, in order, on the calling
 * thread (one caller at a time runs them; others return 0).  Returns how
 * many ran. */
int braid_timerq_run(braid_timerq_t *q, int64_t now);

/* Stops the thread (if any) and frees the queue; timers still queued never fire. */
void braid_timerq_free(braid_timerq_t *q);

/* For a shutdown whose timers own what their data points at (braid.after's
 * channel): from now on braid_timer_add fails with BRAID_ECLOSED, and every
 * timer still queued fires now, on the calling thread, in deadline order
 * (a ticker's re-add then fails and the callback frees it).  Returns how
 * many fired.  No other thread may run or add timers meanwhile. */
int braid_timerq_close(braid_timerq_t *q);

/* Queues t to fire at deadline (absolute, clock.h) with cb.  t must not be
 * queued.  Returns 0, or BRAID_ENOMEM or (after braid_timerq_close)
 * BRAID_ECLOSED with nothing queued. */
int braid_timer_add(braid_timerq_t *q, braid_timer_t *t, int64_t deadline,
                    braid_timer_fn cb, void *data);

/* Removes t.  Returns true if it was queued (its callback will not run),
 * false if it was not (already fired: its callback has returned by now). */
bool braid_timer_cancel(braid_timerq_t *q, braid_timer_t *t);

/* Number of queued timers. */
size_t braid_timerq_len(braid_timerq_t *q);

#endif
