/* sandboxed: a service that installs a seccomp filter before serving (it
 * kills the process on memfd_create), so the engine refuses to patch it:
 * the agent's fallback must restart it instead.
 *   "hello" -> "orig hello" (the fix: "fixed hello") */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

__attribute__((noinline)) void answer(const char *line, char *out, size_t n)
{
	snprintf(out, n, "fixed %s", line);
}

int main(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
	char line[64], out[96];
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
		return 1;
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		answer(line, out, sizeof out);
		printf("%s\n", out);
		fflush(stdout);
	}
	return 0;
}
