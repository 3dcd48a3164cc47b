/*
 * rate_window.h - deliveries over time since the engine started, for the
 * steady delivery rate of a run.
 *
 * DESCRIPTION
 *   msgs_per_s in the exit summary is every delivery over the whole run,
 *   start-up (the first takes, the first full TLS handshakes, the pool
 *   filling) and the end of a drain (the last worker finishing alone)
 *   included: in a run of a few seconds that is a fair part of it. The
 *   steady rate leaves both out: the deliveries between the 10th and the
 *   90th percentile of delivery times, over the time between them. A
 *   benchmark reports both.
 *
 *   Deliveries are counted in slots of RATE_WINDOW_SLOT_MS from the
 *   engine's start, for the first RATE_WINDOW_SLOTS slots (five minutes).
 *   A run that delivered anything later has no steady rate (it would
 *   describe only its beginning): rate_window_steady says 0.
 *
 * OWNERSHIP
 *   A plain value type, no allocations (60 KB): zero it to start. One
 *   thread updates a window; merge after the threads stop.
 *
 * ERRORS
 *   None.
 */
#ifndef TERN_ENGINE_RATE_WINDOW_H
#define TERN_ENGINE_RATE_WINDOW_H

#include <stdint.h>

#define RATE_WINDOW_SLOT_MS   20
#define RATE_WINDOW_SLOTS     15000                 /* 5 minutes */
#define RATE_WINDOW_MIN       100                   /* fewer deliveries: no steady rate */

struct rate_window {
    uint64_t n;                         /* deliveries counted in slots */
    uint64_t late;                      /* deliveries after the last slot */
    uint32_t slot[RATE_WINDOW_SLOTS];
};

/* rate_window_add counts one delivery ms milliseconds after the start
 * (a negative ms counts in the first slot). */
void rate_window_add(struct rate_window *w, int64_t ms);
/* rate_window_merge adds src's deliveries to dst. */
void rate_window_merge(struct rate_window *dst, const struct rate_window *src);
/* rate_window_steady: messages per second between the lo and hi
 * fractions of the deliveries (0 < lo < hi <= 1; e.g. 0.1 and 0.9),
 * measured from the slot where the lo-th one fell to the slot where the
 * hi-th one fell. 0 with fewer than RATE_WINDOW_MIN deliveries, with any
 * late one, or when both fall in the same slot. */
double rate_window_steady(const struct rate_window *w, double lo, double hi);

#endif
