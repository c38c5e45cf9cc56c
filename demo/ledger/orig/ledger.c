/* ledger: a tiny line-oriented account service used by the hotpatch demo.
 *
 * Commands, one per line on stdin, one reply line on stdout:
 *   deposit N      add N to the balance
 *   withdraw N     take N from the balance
 *   memo TEXT      attach a memo (at most 15 characters fit)
 *   balance        print the balance
 * Every reply carries the running request number, so a live patch can be
 * seen to keep the process's state.
 *
 * The bug (CVE-2026-0001, made up for the demo): memo_set trusts the length
 * of TEXT and would copy past the 16-byte memo buffer. To keep the demo
 * free of real memory corruption, the copy is clamped but the reply shows
 * how many bytes the vulnerable code would have written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long balance;
static unsigned long requests;
static char memo[16];

__attribute__((noinline)) static int memo_set(const char *text)
{
	size_t n = strlen(text);
	/* BUG: no bounds check before the copy. */
	memcpy(memo, text, n < sizeof memo ? n + 1 : sizeof memo);
	memo[sizeof memo - 1] = 0;
	return (int)n;
}

__attribute__((noinline)) static void handle(char *line)
{
	requests++;
	line[strcspn(line, "\n")] = 0;
	if (strncmp(line, "deposit ", 8) == 0) {
		balance += atol(line + 8);
		printf("#%lu ok balance=%ld\n", requests, balance);
	} else if (strncmp(line, "withdraw ", 9) == 0) {
		balance -= atol(line + 9);
		printf("#%lu ok balance=%ld\n", requests, balance);
	} else if (strncmp(line, "memo ", 5) == 0) {
		int n = memo_set(line + 5);
		printf("#%lu memo wrote %d bytes into a 16-byte buffer\n", requests, n + 1);
	} else if (strcmp(line, "balance") == 0) {
		printf("#%lu balance=%ld memo=%s\n", requests, balance, memo);
	} else {
		printf("#%lu unknown command\n", requests);
	}
	fflush(stdout);
}

int main(void)
{
	char line[4096];
	while (fgets(line, sizeof line, stdin))
		handle(line);
	return 0;
}
