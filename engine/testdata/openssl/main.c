/* A program that maps OpenSSL's libcrypto, which imports makecontext and
 * swapcontext for its ASYNC jobs. Built twice: plainly (it never pauses an
 * ASYNC job: no suspended stacks) and with -DUSE_ASYNC (it imports
 * ASYNC_pause_job: its jobs may be suspended on their own stacks). It
 * answers each line of stdin with one line. */
#include <stdio.h>
#include <string.h>

extern unsigned int OPENSSL_version_major(void);
#ifdef USE_ASYNC
extern int ASYNC_pause_job(void);
int (*volatile pause_job)(void) = ASYNC_pause_job;
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
