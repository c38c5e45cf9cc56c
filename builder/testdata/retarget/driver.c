/* The program that runs the service when it is built as a shared library
 * (-DAS_LIBRARY): the patch is for the library, which is what a
 * distribution ships and rebuilds. */
extern int svc_main(void);

int main(void)
{
	return svc_main();
}
