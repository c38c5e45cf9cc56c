/* name_of copies a local array of pointers whose template gcc keeps as
 * unnamed data (.data under PIE, .rodata under -no-pie); the fix changes
 * name_of itself, which must go on using the original's template, not a
 * copy; lookup, unchanged, uses the same kind of template. */
#include <stdio.h>

struct level {
	long v;
	const char *name;
};

__attribute__((noinline)) static const char *find(const struct level *a, long v)
{
	for (int i = 0; a[i].name; i++)
		if (a[i].v == v)
			return a[i].name;
	return 0;
}

__attribute__((noinline)) const char *name_of(long v)
{
	struct level a[] = {
		{0, "s0"}, {1, "s1"}, {2, "s2"}, {3, "s3"}, {4, "s4"}, {5, "s5"},
		{6, "s6"}, {7, "s7"}, {8, "s8"}, {9, "s9"}, {10, "s10"}, {11, "s11"},
		{12, "s12"}, {13, "s13"}, {14, "s14"}, {15, "s15"}, {16, "s16"}, {17, "s17"},
		{18, "s18"}, {19, "s19"}, {20, "s20"}, {21, "s21"}, {22, "s22"}, {23, "s23"},
		{0, 0},
	};
	const char *n = find(a, v);
	return n ? n : "none";
}

__attribute__((noinline)) const char *lookup(long v)
{
	struct level a[] = {
		{0, "t0"}, {1, "t1"}, {2, "t2"}, {3, "t3"}, {4, "t4"}, {5, "t5"},
		{6, "t6"}, {7, "t7"}, {8, "t8"}, {9, "t9"}, {10, "t10"}, {11, "t11"},
		{12, "t12"}, {13, "t13"}, {14, "t14"}, {15, "t15"}, {16, "t16"}, {17, "t17"},
		{18, "t18"}, {19, "t19"}, {20, "t20"}, {21, "t21"}, {22, "t22"}, {23, "t23"},
		{0, 0},
	};
	const char *n = find(a, v);
	return n ? n : "none";
}

int main(int argc, char **argv)
{
	(void)argv;
	printf("%s %s\n", name_of(argc), lookup(argc));
	return 0;
}
