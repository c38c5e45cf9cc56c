/* mainexit: main starts a worker and ends its own thread with
 * pthread_exit, as some daemons do; the worker serves stdin. The main
 * thread is then a zombie the engine cannot make calls in.
 *   "hello" -> "orig hello" (the fix: "fixed hello") */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) void answer(const char *line, char *out, size_t n)
{
	snprintf(out, n, "fixed %s", line);
}

static void *worker(void *arg)
{
	char line[128], out[160];
	(void)arg;
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		answer(line, out, sizeof out);
		printf("%s\n", out);
		fflush(stdout);
	}
	return NULL;
}

int main(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, worker, NULL) != 0)
		return 1;
	pthread_exit(NULL);
}
