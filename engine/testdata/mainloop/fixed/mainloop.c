/* mainloop: the bug is in main's own loop, which runs until the program
 * ends: such a function can never be switched live. */
#include <stdio.h>
#include <string.h>

int main(void)
{
	char line[64];
	unsigned long n = 0;
	while (fgets(line, sizeof line, stdin)) {
		n++;
		printf("%lu %zu\n", n, strlen(line) > 32 ? (size_t)32 : strlen(line));
		fflush(stdout);
	}
	return 0;
}
