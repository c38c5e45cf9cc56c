/* held: a worker thread stays inside slow_step until the test lets it go,
 * one call per "release", for the tests of the consistency check that must
 * not depend on the machine's speed: a function a thread occupies for as
 * long as the test wants, with only a few instructions between two calls.
 * The main thread answers "step" with slow_step(100, 0), which does not
 * wait; "release" by letting the worker's current call return; "inside"
 * with 1 while the worker waits inside slow_step, else 0; and "calls" with
 * the number of calls the worker completed. The fix changes the value
 * slow_step returns. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static int gate[2];
static volatile int last;
static volatile int inside;
static volatile unsigned long calls;

__attribute__((noinline)) int slow_step(int x, int wait)
{
	char c;
	if (wait) {
		inside = 1;
		while (read(gate[0], &c, 1) != 1)
			;
		inside = 0;
	}
	return x + 1000;
}

static void *worker(void *arg)
{
	(void)arg;
	for (int i = 0;; i++) {
		last = slow_step(i, 1);
		calls++;
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	char line[64];
	if (pipe(gate) != 0 || pthread_create(&t, NULL, worker, NULL) != 0)
		return 1;
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "step", 4) == 0)
			printf("step %d\n", slow_step(100, 0));
		else if (strncmp(line, "release", 7) == 0)
			printf("released %d\n", (int)write(gate[1], "x", 1));
		else if (strncmp(line, "inside", 6) == 0)
			printf("inside %d\n", inside);
		else
			printf("calls %lu\n", calls);
		fflush(stdout);
	}
	return 0;
}
