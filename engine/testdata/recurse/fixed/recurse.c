/* recurse: a worker thread spends almost all its time deep inside a
 * recursion of walk (six frames of it on its stack), sleeping at the bottom
 * for half a second; between two walks it runs a few instructions. A patch
 * of walk can only land when the outermost frame returns.
 *   "walk"  -> walk(2) from main, without sleeping (3; the fix gives 21)
 *   "calls" -> how many walks the worker completed */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static volatile unsigned long calls;

__attribute__((noinline)) int walk(int depth, int nap)
{
	if (depth == 0) {
		struct timespec ts = {0, 500000000L};
		while (nap && nanosleep(&ts, &ts) != 0)
			;
		return 1;
	}
	return walk(depth - 1, nap) + 10;
}

static void *worker(void *arg)
{
	(void)arg;
	for (;;) {
		walk(5, 1);
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
		if (strncmp(line, "walk", 4) == 0)
			printf("walk %d\n", walk(2, 0));
		else
			printf("calls %lu\n", calls);
		fflush(stdout);
	}
	return 0;
}
