/* Two files with a static of the same name; the fix renames both files. */
static long count;

__attribute__((noinline)) long bump_b(long n)
{
	if (n > 0)
		count += n;
	return count;
}
