/* A small library for the comparison tests: a function that calls a
 * static one, a string, a table and writable data, like a real module. */
#include <stdio.h>
#include <string.h>

static const int table[8] = {3, 1, 4, 1, 5, 9, 2, 6};
/* 8-byte data, so that the empty .tm_clone_table that -Wl,--emit-relocs
 * keeps does not change the layout of the writable segment (see
 * TestCompareEmptySectionAlignment). */
long counter = 7;
long total;

static int weigh(const char *s) {
	int w = 0;
	for (size_t i = 0; s[i]; i++)
		w += table[(unsigned char)s[i] % 8];
	return w;
}

int describe(char *out, size_t n, const char *s) {
	counter++;
	total += (long)n;
	return snprintf(out, n, GREETING " %s weighs %d (%ld)", s, weigh(s), counter);
}
