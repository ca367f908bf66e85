/*
 * clock.h - time.  Durations and timeouts use the monotonic clock (never
 * jumps); only timestamps shown to people or stored use wall-clock time.
 */
#ifndef WEFT_CLOCK_H
#define WEFT_CLOCK_H

#include <stdint.h>

/* clock_now_ns - monotonic nanoseconds since an arbitrary start. */
uint64_t clock_now_ns(void);

/* clock_now_ms - monotonic milliseconds since an arbitrary start. */
uint64_t clock_now_ms(void);

/* clock_wall_us - wall-clock microseconds since the Unix epoch. */
int64_t clock_wall_us(void);

/*
 * clock_deadline - the wall-clock time ns nanoseconds from now, as
 * pthread_cond_timedwait() wants its deadline (CLOCK_REALTIME, the
 * condition variables' default clock).
 */
struct timespec;
void clock_deadline(struct timespec *ts, uint64_t ns);

/* clock_sleep_ms - sleep at least ms milliseconds (restarts on EINTR). */
void clock_sleep_ms(uint32_t ms);

#endif /* WEFT_CLOCK_H */
