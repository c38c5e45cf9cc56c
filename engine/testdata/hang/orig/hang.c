/* hang: "hang" starts a thread that calls wait_here(), which blocks for
 * good; "ping" answers "pong N M": N threads started, M of them inside
 * wait_here. The fix changes what wait_here would return. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile int release;
static volatile int result;
static int started;
static volatile int entered;

__attribute__((noinline)) int wait_here(int x)
{
	__atomic_add_fetch(&entered, 1, __ATOMIC_SEQ_CST);
	while (!release)
		pause();
	return x + 1;
}

static void *hanger(void *arg)
{
	(void)arg;
	result = wait_here(1);
	return NULL;
}

int main(void)
{
	char line[64];
	pthread_t t;

	while (fgets(line, sizeof line, stdin)) {
		if (strncmp(line, "hang", 4) == 0 && pthread_create(&t, NULL, hanger, NULL) == 0)
			started++;
		printf("pong %d %d\n", started, entered);
		fflush(stdout);
	}
	return 0;
}
