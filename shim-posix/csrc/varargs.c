/*
 * The C-variadic libc entry points that stable Rust cannot define: fcntl, fcntl64, ioctl
 * and the list forms of exec (execl, execlp, execle). Each one only unpacks its `...`
 * arguments and calls a non-variadic function written in Rust (src/ffi/varargs.rs), which
 * also exports the public symbol as a trampoline that jumps here with every register and
 * the stack untouched, so these functions see exactly the caller's variadic call.
 *
 * fcntl and ioctl take at most one optional argument, an integer or a pointer; reading it
 * as an unsigned long when the caller passed none is what libc's own wrappers do: on the
 * supported ABIs (x86-64 SysV, AArch64 Linux) the register is simply read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <errno.h>

int netpop_rs_fcntl(int fd, int cmd, unsigned long arg);
int netpop_rs_fcntl64(int fd, int cmd, unsigned long arg);
int netpop_rs_ioctl(int fd, unsigned long request, unsigned long arg);
int netpop_rs_execv(const char *path, char *const argv[]);
int netpop_rs_execvp(const char *file, char *const argv[]);
int netpop_rs_execve(const char *path, char *const argv[], char *const envp[]);

int netpop_va_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return netpop_rs_fcntl(fd, cmd, arg);
}

int netpop_va_fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return netpop_rs_fcntl64(fd, cmd, arg);
}

int netpop_va_ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    unsigned long arg = va_arg(ap, unsigned long);
    va_end(ap);
    return netpop_rs_ioctl(fd, request, arg);
}

/* Longest argument list kept on the stack; longer ones are copied to the heap. */
#define STACK_ARGS 256

/*
 * Collects `first` and the following arguments up to the terminating NULL into `argv`
 * (NULL-terminated), returning the array (stack or heap) or NULL on allocation failure.
 * `*heap` says whether the caller must free it. `*ap` is left just past the NULL
 * (passed by pointer: on AArch64 `va_list` is a struct, copied when passed by value).
 */
static const char **collect_args(const char *first, va_list *ap, const char **stack_buf,
                                 int *heap)
{
    va_list count_ap;
    size_t n = 1;
    va_copy(count_ap, *ap);
    if (first != NULL) {
        while (va_arg(count_ap, const char *) != NULL)
            n++;
    }
    va_end(count_ap);
    const char **argv = stack_buf;
    *heap = 0;
    if (n + 1 > STACK_ARGS) {
        argv = malloc((n + 1) * sizeof(*argv));
        if (argv == NULL)
            return NULL;
        *heap = 1;
    }
    argv[0] = first;
    if (first != NULL) {
        for (size_t i = 1; i < n; i++)
            argv[i] = va_arg(*ap, const char *);
        (void)va_arg(*ap, const char *); /* the terminating NULL */
    }
    argv[n] = NULL;
    return argv;
}

int netpop_va_execl(const char *path, const char *arg, ...)
{
    const char *stack_buf[STACK_ARGS];
    int heap;
    va_list ap;
    va_start(ap, arg);
    const char **argv = collect_args(arg, &ap, stack_buf, &heap);
    va_end(ap);
    if (argv == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int rc = netpop_rs_execv(path, (char *const *)argv);
    if (heap)
        free(argv);
    return rc;
}

int netpop_va_execlp(const char *file, const char *arg, ...)
{
    const char *stack_buf[STACK_ARGS];
    int heap;
    va_list ap;
    va_start(ap, arg);
    const char **argv = collect_args(arg, &ap, stack_buf, &heap);
    va_end(ap);
    if (argv == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int rc = netpop_rs_execvp(file, (char *const *)argv);
    if (heap)
        free(argv);
    return rc;
}

int netpop_va_execle(const char *path, const char *arg, ...)
{
    const char *stack_buf[STACK_ARGS];
    int heap;
    va_list ap;
    va_start(ap, arg);
    const char **argv = collect_args(arg, &ap, stack_buf, &heap);
    /* The environment follows the NULL that ends the argument list. */
    char *const *envp = va_arg(ap, char *const *);
    va_end(ap);
    if (argv == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int rc = netpop_rs_execve(path, (char *const *)argv, envp);
    if (heap)
        free(argv);
    return rc;
}
