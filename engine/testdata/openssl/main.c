/* A program that maps OpenSSL's libcrypto, which imports makecontext and
 * swapcontext for its ASYNC jobs. Built twice: plainly (it never runs an
 * ASYNC job: no coroutine stacks) and with -DUSE_ASYNC (it imports
 * ASYNC_start_job: jobs may be suspended on their own stacks). It answers
 * each line of stdin with one line. */
#include <stdio.h>
#include <string.h>

extern unsigned int OPENSSL_version_major(void);
#ifdef USE_ASYNC
extern int ASYNC_start_job(void **job, void *ctx, int *ret, int (*func)(void *), void *args, size_t size);
int (*volatile start_job)(void **, void *, int *, int (*)(void *), void *, size_t) = ASYNC_start_job;
#endif

int main(void) {
	char line[256];
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		printf("openssl %u %s\n", OPENSSL_version_major(), line);
	}
	return 0;
}
