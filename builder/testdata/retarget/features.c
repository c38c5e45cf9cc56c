/* The part of a program whose build depends on what the build machine
 * has: a distribution's build found one more library (-DWITH_ZSTD) than
 * the rebuild did. Linked first, so everything after it moves: code,
 * read-only data, the pointer table in .data.rel.ro, .data and .bss.
 * With -DCOUNT_LEVELS the shipped build's code differs as well. */
#include <stddef.h>

const char *const features[] = {
	"deflate",
	"brotli",
#ifdef WITH_ZSTD
	"zstd",
#endif
	NULL,
};

#ifdef WITH_ZSTD
long zstd_window = 1 << 20;
static char zstd_buf[256];

__attribute__((noinline)) int zstd_level(int x)
{
	zstd_buf[x & 255] = (char)zstd_window;
	return x * 7 + 3 + zstd_buf[1];
}
#endif

int feature_count(void)
{
	int n = 0;
	for (const char *const *f = features; *f; f++)
		n++;
#ifdef COUNT_LEVELS
	n += zstd_level(0) - 3;
#endif
	return n;
}
