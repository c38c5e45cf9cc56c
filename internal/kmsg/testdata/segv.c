/* Writes to address 16: the kernel kills it with SIGSEGV and logs
   "kmsg-segv[PID]: segfault at 10 ip ... error 6 in kmsg-segv[...]". */
int main(void)
{
	*(volatile int *)16 = 1;
	return 0;
}
