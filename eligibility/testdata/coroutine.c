/* Switches stacks in user space with swapcontext (a coroutine). */
#include <stdio.h>
#include <ucontext.h>

static ucontext_t main_ctx, co_ctx;
static char co_stack[65536];

static void co(void) { puts("in coroutine"); }

int main(void)
{
	getcontext(&co_ctx);
	co_ctx.uc_stack.ss_sp = co_stack;
	co_ctx.uc_stack.ss_size = sizeof co_stack;
	co_ctx.uc_link = &main_ctx;
	makecontext(&co_ctx, co, 0);
	swapcontext(&main_ctx, &co_ctx);
	return 0;
}
