/* busy: a worker thread spends almost all its time inside slow_step (one
 * second per call), for the tests of the
 * consistency check. Between two calls the worker runs only a few
 * instructions, so a check that polls will practically never see it outside.
 * The main thread answers "step" with the last result
 * and "calls" with the number of completed calls. The fix changes the
 * value slow_step returns. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile int last;
static volatile unsigned long calls;

static void pause_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	while (nanosleep(&ts, &ts) != 0)
		;
}

__attribute__((noinline)) int slow_step(int x)
{
	pause_ms(1000);
	return x + 1000;
}

static void *worker(void *arg)
{
	(void)arg;
	for (int i = 0;; i++) {
		last = slow_step(i);
		calls++;
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	if (pthread_create(&t, NULL, worker, NULL) != 0)
		return 1;
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "step", 4) == 0)
			printf("step %d\n", slow_step(100));
		else
			printf("calls %lu\n", calls);
		fflush(stdout);
	}
	return 0;
}
