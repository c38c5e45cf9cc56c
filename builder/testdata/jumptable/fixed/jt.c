/*
 * The fix adds a case to checker's switch: its jump table grows by one
 * entry, which moves dispatch's table, the next in .rodata, and changes
 * the alignment padding between that table and weights. dispatch did not
 * change and stays out of the patch.
 */
#include <stdio.h>
#include <stdlib.h>

__attribute__((noinline)) void show(int a, int b, long c)
{
	printf("%d %d %ld\n", a, b, c);
}

__attribute__((noinline)) int checker(int op)
{
	switch (op) {
	case 0: return 11;
	case 1: return printf("one\n");
	case 2: return puts("two");
	case 3: return 17;
	case 4: return getchar();
	case 5: return 23;
	case 6: return rand();
	case 7: return 29;
	default: return -1;
	}
}

__attribute__((noinline)) int dispatch(int op)
{
	switch (op) {
	case 0: return 101;
	case 1: return printf("d1\n");
	case 2: return puts("d2");
	case 3: return 107;
	case 4: return getchar() + 1;
	case 5: return 113;
	case 6: return rand() + 2;
	default: return -2;
	}
}

static const long weights[4] __attribute__((aligned(16))) = {3, 5, 7, 9};

__attribute__((noinline)) long weight(int i)
{
	return weights[i & 3];
}

int main(int argc, char **argv)
{
	int op = argc > 1 ? atoi(argv[1]) : 0;
	show(checker(op), dispatch(op), weight(op));
	return 0;
}
