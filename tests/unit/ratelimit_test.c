/*
 * ratelimit_test.c - services/shared/ratelimit.c on a clock the test
 * drives: the burst, the rate after it, the wait a refusal names (to a
 * tenth of the burst), keys apart, no limit at rate 0, and a table that forgets
 * idle keys.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <stdio.h>

#include "services/shared/ratelimit.h"

#define MS 1000000ull /* ns */
#define T0 (1000 * MS)

/* how many takes of key at `at` go before the first refusal (which
 * takes nothing) */
static int
allowed(struct ratelimit *rl, const char *key, uint64_t at)
{
	int n = 0;

	while (n < 1000000 && ratelimit_take(rl, key, at) == 0)
		n++;
	return n;
}

Test(ratelimit, a_burst_goes_then_the_rate_holds)
{
	/* 100 a second: one every 10 ms, 5 at once */
	struct ratelimit *rl = ratelimit_new(100, 5);

	for (int i = 0; i < 5; i++)
		cr_assert(eq(u32, ratelimit_take(rl, "ann", T0), 0), "take %d",
			  i);
	/* the sixth at once: the next token is 10 ms away */
	cr_assert(eq(u32, ratelimit_take(rl, "ann", T0), 10));
	cr_assert(eq(u32, ratelimit_take(rl, "ann", T0 + 4 * MS), 6));
	/* a refusal takes nothing: at 10 ms exactly one goes, not two */
	cr_assert(eq(u32, ratelimit_take(rl, "ann", T0 + 10 * MS), 0));
	cr_assert(eq(u32, ratelimit_take(rl, "ann", T0 + 10 * MS), 10));
	/* a sustained 100/s goes through, 101/s does not */
	for (int i = 2; i < 100; i++)
		cr_assert(
			eq(u32, ratelimit_take(rl, "ann", T0 + i * 10 * MS), 0),
			"take at %d ms", i * 10);
	int refused = 0;

	for (int i = 0; i < 101; i++)
		refused += ratelimit_take(rl, "ann",
					  T0 + 1000 * MS + i * 9900000ull) != 0;
	cr_assert(lt(int, 0, refused));
	ratelimit_free(rl);
}

Test(ratelimit, a_quiet_spell_refills_the_burst_and_no_more)
{
	struct ratelimit *rl = ratelimit_new(10, 3);

	cr_assert(eq(int, allowed(rl, "bo", T0), 3));
	cr_assert(eq(u32, ratelimit_take(rl, "bo", T0), 100));
	/* an hour later: the burst again, not an hour's tokens */
	cr_assert(eq(int, allowed(rl, "bo", T0 + 3600000 * MS), 3));
	ratelimit_free(rl);
}

Test(ratelimit, keys_have_their_own_buckets)
{
	struct ratelimit *rl = ratelimit_new(1, 2);

	cr_assert(eq(int, allowed(rl, "ann", T0), 2));
	cr_assert(eq(u32, ratelimit_take(rl, "ann", T0), 1000));
	cr_assert(eq(u32, ratelimit_take(rl, "bo", T0), 0));
	cr_assert(eq(u32, ratelimit_take(rl, "an", T0), 0));
	cr_assert(eq(u32, ratelimit_take(rl, "", T0), 0));
	cr_assert(eq(sz, ratelimit_keys(rl), 4));
	ratelimit_free(rl);
}

Test(ratelimit, a_wait_rounds_up_to_whole_milliseconds)
{
	/* 3 a second: a token every 333,333,333 ns */
	struct ratelimit *rl = ratelimit_new(3, 1);

	cr_assert(eq(u32, ratelimit_take(rl, "c", T0), 0));
	cr_assert(eq(u32, ratelimit_take(rl, "c", T0), 334));
	cr_assert(eq(u32, ratelimit_take(rl, "c", T0 + 333 * MS), 1));
	cr_assert(eq(u32, ratelimit_take(rl, "c", T0 + 333333333), 0));
	ratelimit_free(rl);
}

Test(ratelimit, a_refusal_waits_for_a_tenth_of_the_burst)
{
	/* 1,000 a second, 200 at once: refused, wait for 20 tokens */
	struct ratelimit *rl = ratelimit_new(1000, 200);

	cr_assert(eq(int, allowed(rl, "d", T0), 200));
	cr_assert(eq(u32, ratelimit_take(rl, "d", T0), 20));
	/* and after it, those 20 go at once, the 21st is refused */
	for (int i = 0; i < 20; i++)
		cr_assert(eq(u32, ratelimit_take(rl, "d", T0 + 20 * MS), 0),
			  "take %d", i);
	cr_assert(eq(u32, ratelimit_take(rl, "d", T0 + 20 * MS), 20));
	ratelimit_free(rl);
}

Test(ratelimit, a_refusal_waits_at_most_a_second_past_the_first_token)
{
	/* 10 a second, 10,000 at once: a tenth would be 100 s */
	struct ratelimit *rl = ratelimit_new(10, 10000);

	for (int i = 0; i < 10000; i++)
		cr_assert(eq(u32, ratelimit_take(rl, "e", T0), 0));
	cr_assert(eq(u32, ratelimit_take(rl, "e", T0), 100 + 1000));
	ratelimit_free(rl);
}

Test(ratelimit, a_refund_gives_one_token_back_and_no_more)
{
	struct ratelimit *rl = ratelimit_new(1, 2);

	cr_assert(eq(int, allowed(rl, "f", T0), 2));
	ratelimit_refund(rl, "f", T0);
	cr_assert(eq(int, allowed(rl, "f", T0), 1));
	/* a full bucket gets nothing more, nor does an unknown key */
	ratelimit_refund(rl, "f", T0);
	ratelimit_refund(rl, "f", T0);
	ratelimit_refund(rl, "f", T0);
	ratelimit_refund(rl, "nobody", T0);
	cr_assert(eq(int, allowed(rl, "f", T0), 2));
	ratelimit_free(rl);
}

Test(ratelimit, rate_zero_is_no_limit)
{
	struct ratelimit *rl = ratelimit_new(0, 0);

	for (int i = 0; i < 100000; i++)
		cr_assert(eq(u32, ratelimit_take(rl, "ann", T0), 0));
	cr_assert(eq(sz, ratelimit_keys(rl), 0));
	ratelimit_free(rl);
	ratelimit_free(NULL);
}

Test(ratelimit, idle_keys_are_forgotten_busy_ones_kept)
{
	/* one a second, burst 1: a key is idle 1 s after its take */
	struct ratelimit *rl = ratelimit_new(1, 1);
	char key[32];

	/* 100,000 users, each seen once, a millisecond apart */
	for (int i = 0; i < 100000; i++) {
		snprintf(key, sizeof(key), "user%d", i);
		cr_assert(eq(u32, ratelimit_take(rl, key, T0 + i * MS), 0));
	}
	/* only the last second's (1,000) are worth keeping; the sweeps keep
	 * at most about twice that (or half the slots), over the shards */
	cr_assert(lt(sz, ratelimit_keys(rl), 4000), "%zu keys",
		  ratelimit_keys(rl));
	cr_assert(ge(sz, ratelimit_keys(rl), 1000));
	/* and what it kept still limits: the last user is refused */
	cr_assert(eq(u32, ratelimit_take(rl, "user99999", T0 + 99999 * MS),
		     1000));
	ratelimit_free(rl);
}

struct hammer {
	struct ratelimit *rl;
	const char *key;
	int allowed;
};

static void *
hammer_run(void *arg)
{
	struct hammer *h = arg;

	for (int i = 0; i < 20000; i++)
		h->allowed += ratelimit_take(h->rl, h->key, T0) == 0;
	return NULL;
}

Test(ratelimit, threads_share_one_bucket_exactly)
{
	/* four threads on one key at one instant: the burst, exactly */
	struct ratelimit *rl = ratelimit_new(1000, 777);
	struct hammer h[4];
	pthread_t t[4];
	int total = 0;

	for (int i = 0; i < 4; i++) {
		h[i] = (struct hammer){ rl, i % 2 ? "ann" : "bo", 0 };
		pthread_create(&t[i], NULL, hammer_run, &h[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		total += h[i].allowed;
	}
	cr_assert(eq(int, total, 2 * 777));
	ratelimit_free(rl);
}
