/* A stand-in libkrun for tests: the signatures of libkrun.h, every call appended to the file
 * named by KRUN_STUB_LOG, a chosen call failing with KRUN_STUB_FAIL="function:errno", and
 * krun_start_enter exiting the process with KRUN_STUB_EXIT, as the real one does. Built with
 * -DSTUB_MINIMAL it lacks the optional functions, like PyPI's fork (and older builds). */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void logline(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#include <stdarg.h>
/* Settings come from the environment, else from -D defines given when compiling (for a
 * process whose environment the caller does not control). */
#ifndef STUB_LOG
#define STUB_LOG NULL
#endif
#ifndef STUB_EXIT
#define STUB_EXIT "0"
#endif
#ifndef STUB_FAIL
#define STUB_FAIL NULL
#endif
#ifndef STUB_ON_ENTER
#define STUB_ON_ENTER NULL
#endif
#include <sys/wait.h>
#include <unistd.h>
/* The root the "guest" would see: krun_set_root's path, or the /dev/root virtiofs fallback. */
static char root_path[4096];
static const char *setting(const char *name, const char *fallback) {
    const char *value = getenv(name);
    return value ? value : fallback;
}

static void logline(const char *fmt, ...) {
    const char *path = setting("KRUN_STUB_LOG", STUB_LOG);
    if (!path) return;
    FILE *f = fopen(path, "a");
    if (!f) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    fputc('\n', f);
    fclose(f);
}

static int32_t result(const char *fn) {
    const char *fail = setting("KRUN_STUB_FAIL", STUB_FAIL);
    size_t n = strlen(fn);
    if (fail && strncmp(fail, fn, n) == 0 && fail[n] == ':') return -atoi(fail + n + 1);
    return 0;
}

static void list(const char *name, const char *const items[]) {
    for (int i = 0; items && items[i]; i++) logline("  %s[%d]=%s", name, i, items[i]);
}

int32_t krun_set_log_level(uint32_t level) { logline("krun_set_log_level %u", level); return result("krun_set_log_level"); }
int32_t krun_create_ctx(void) { logline("krun_create_ctx"); int32_t r = result("krun_create_ctx"); return r < 0 ? r : 7; }
int32_t krun_free_ctx(uint32_t ctx) { logline("krun_free_ctx %u", ctx); return result("krun_free_ctx"); }
int32_t krun_set_vm_config(uint32_t ctx, uint8_t vcpus, uint32_t ram) { logline("krun_set_vm_config %u %u %u", ctx, vcpus, ram); return result("krun_set_vm_config"); }
#ifndef STUB_MINIMAL
int32_t krun_set_nested_virt(uint32_t ctx, bool on) { logline("krun_set_nested_virt %u %d", ctx, on); return result("krun_set_nested_virt"); }
#endif
#ifndef STUB_MINIMAL
int32_t krun_check_nested_virt(void) {
    logline("krun_check_nested_virt");
    int32_t r = result("krun_check_nested_virt");
    return r < 0 ? r : atoi(setting("KRUN_STUB_NESTED", "0"));
}
#endif
#ifndef STUB_MINIMAL
int32_t krun_init_log(int fd, uint32_t level, uint32_t style, uint32_t options) { logline("krun_init_log %d %u %u %u", fd, level, style, options); return result("krun_init_log"); }
#endif
#ifndef STUB_MINIMAL
int32_t krun_set_root(uint32_t ctx, const char *path) { logline("krun_set_root %u %s", ctx, path); snprintf(root_path, sizeof root_path, "%s", path); return result("krun_set_root"); }
#endif
int32_t krun_add_disk(uint32_t ctx, const char *id, const char *path, bool ro) { logline("krun_add_disk %u %s %s %d", ctx, id, path, ro); return result("krun_add_disk"); }
#ifndef STUB_MINIMAL
int32_t krun_disable_implicit_console(uint32_t ctx) { logline("krun_disable_implicit_console %u", ctx); return result("krun_disable_implicit_console"); }
#endif
#ifndef STUB_MINIMAL
int32_t krun_add_virtio_console_default(uint32_t ctx, int in, int out, int err) { logline("krun_add_virtio_console_default %u %d %d %d", ctx, in, out, err); return result("krun_add_virtio_console_default"); }
#endif
int32_t krun_add_virtiofs(uint32_t ctx, const char *tag, const char *path) {
    logline("krun_add_virtiofs %u %s %s", ctx, tag, path);
    if (strcmp(tag, "/dev/root") == 0) snprintf(root_path, sizeof root_path, "%s", path);
    return result("krun_add_virtiofs");
}
#ifndef STUB_MINIMAL
int32_t krun_add_virtiofs3(uint32_t ctx, const char *tag, const char *path, uint64_t shm, bool ro) { logline("krun_add_virtiofs3 %u %s %s %llu %d", ctx, tag, path, (unsigned long long)shm, ro); return result("krun_add_virtiofs3"); }
#endif
int32_t krun_set_workdir(uint32_t ctx, const char *dir) { logline("krun_set_workdir %u %s", ctx, dir); return result("krun_set_workdir"); }
int32_t krun_set_exec(uint32_t ctx, const char *path, const char *const argv[], const char *const envp[]) {
    logline("krun_set_exec %u %s", ctx, path); list("argv", argv); list("env", envp); return result("krun_set_exec");
}
int32_t krun_start_enter(uint32_t ctx) {
    logline("krun_start_enter %u", ctx);
    int32_t r = result("krun_start_enter");
    if (r < 0) return r;
    /* KRUN_STUB_ON_ENTER: a program run as "the guest" would be, in this process's namespaces,
     * with the root path as its argument; its output goes to stdout, its status to the log. */
    const char *on_enter = setting("KRUN_STUB_ON_ENTER", STUB_ON_ENTER);
    if (on_enter) {
        fflush(NULL);
        pid_t pid = fork();
        if (pid == 0) { execl(on_enter, on_enter, root_path, (char *)NULL); _exit(127); }
        int status = 0;
        waitpid(pid, &status, 0);
        logline("on_enter %d", WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    exit(atoi(setting("KRUN_STUB_EXIT", STUB_EXIT)));
}
