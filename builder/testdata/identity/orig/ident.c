/*
 * Shapes of data that an unchanged function refers to and that must not
 * make it look changed; only changed() differs between orig and fixed.
 *
 *   walk: a ring of twelve const nodes pointing to each other (deeper than
 *         any fixed recursion limit);
 *   get:  tab[i - 1] on a static array, which gcc writes as tab-8(,%rdi,8)
 *         under -no-pie: the displacement lies before tab, in padding;
 *   f1, f2, f3: three identical static const tables that gcc merges into
 *         one object with three names (t.0, t.1, t.2 at one address);
 *   tag:  a string literal that is the tail of another ("ring" in
 *         "a ring"), followed by a table of pointers to strings;
 *   greet: a writable table of pointers to string literals, whose initial
 *         value must compare equal although the fix adds a literal and
 *         .rodata moves.
 */
#include <stdio.h>

#define NOINLINE __attribute__((noinline))

struct node {
	const struct node *next;
	int v;
};

static const struct node a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a0;
static const struct node a0 = {&a1, 0}, a1 = {&a2, 1}, a2 = {&a3, 2}, a3 = {&a4, 3},
			 a4 = {&a5, 4}, a5 = {&a6, 5}, a6 = {&a7, 6}, a7 = {&a8, 7},
			 a8 = {&a9, 8}, a9 = {&a10, 9}, a10 = {&a11, 10}, a11 = {&a0, 11};

static const char *greetings[] = {"hello", "bonjour", "hallo", "ciao"};
static long other[3];
static long tab[16];

NOINLINE int walk(int k)
{
	const struct node *n = &a0;

	while (k--)
		n = n->next;
	return n->v;
}

NOINLINE long get(long i)
{
	return tab[i - 1];
}

NOINLINE int f1(int i)
{
	static const int t[] = {5, 6, 7, 8, 9, 10, 11, 12};
	return t[i & 7];
}

NOINLINE int f2(int i)
{
	static const int t[] = {5, 6, 7, 8, 9, 10, 11, 12};
	return t[(i + 1) & 7];
}

NOINLINE int f3(int i)
{
	static const int t[] = {5, 6, 7, 8, 9, 10, 11, 12};
	return t[(i + 2) & 7];
}

NOINLINE const char *tag(int i)
{
	static const char *const names[] = {"a ring", "ring", "bell", "a bell"};
	return names[i & 3];
}

NOINLINE const char *greet(int i)
{
	const char *g = greetings[i & 3];
	greetings[i & 3] = greetings[(i + 1) & 3];
	return g;
}

__attribute__((noipa)) int changed(int i)
{
	if (i > 100)
		puts("clamp A");
	return i + 1;
}

int main(int argc, char **argv)
{
	other[1] = argc;
	tab[3] = argc;
	printf("%d %ld %d %d %d %s %s %d %s\n", walk(argc), get(argc), f1(argc), f2(argc), f3(argc),
	       tag(argc), greet(argc), changed(argc), argv[0]);
	return 0;
}
