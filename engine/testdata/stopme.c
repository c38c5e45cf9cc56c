/* stopme: a target for the stop-the-world tests.
 * usage: STOPME_THREADS=N [STOPME_SPINNERS=S] stopme
 * S of the N workers (default: half) spin calling a function, the others
 * block in read() on a pipe nobody writes. The main thread answers lines on stdin:
 *   ping   -> "pong N" (N counts pings)
 *   eintr  -> "eintr N" (how many times a blocked read saw EINTR: must stay 0)
 *   spins  -> "spins N" (total loop iterations of the spinning workers)
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int pipefd[2];
static volatile unsigned long spins;
static volatile unsigned long eintrs;

__attribute__((noinline)) static unsigned long spin_step(unsigned long x) { return x * 2654435761u + 1; }

static void *reader(void *arg)
{
	char c;
	(void)arg;
	for (;;) {
		ssize_t n = read(pipefd[0], &c, 1);
		if (n < 0 && errno == EINTR)
			__atomic_add_fetch(&eintrs, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void *spinner(void *arg)
{
	unsigned long x = (unsigned long)arg;
	for (;;) {
		x = spin_step(x);
		__atomic_add_fetch(&spins, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

int main(void)
{
	const char *env = getenv("STOPME_THREADS");
	int n = env ? atoi(env) : 4;
	const char *senv = getenv("STOPME_SPINNERS");
	int spinners = senv ? atoi(senv) : n / 2;
	char line[256];
	unsigned long pings = 0;
	if (pipe(pipefd) != 0)
		return 1;
	for (int i = 0; i < n; i++) {
		pthread_t t;
		int spin = senv ? i < spinners : i % 2;
		if (pthread_create(&t, NULL, spin ? spinner : reader, (void *)(long)i) != 0)
			return 1;
	}
	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "ping", 4) == 0)
			printf("pong %lu\n", ++pings);
		else if (strncmp(line, "eintr", 5) == 0)
			printf("eintr %lu\n", eintrs);
		else if (strncmp(line, "spins", 5) == 0)
			printf("spins %lu\n", spins);
		else
			printf("?\n");
		fflush(stdout);
	}
	return 0;
}
