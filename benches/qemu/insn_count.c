/*
 * insn_count.c: a QEMU TCG plugin (qemu-user 7.2 and later, plugin API version 1) that counts
 * the guest instructions a program executes, over all its threads, and prints the total when
 * the program exits:
 *
 *   qemu-insn-count: 123456789
 *
 * Debian's qemu-user is built with plugin support but ships no plugins and no qemu-plugin.h,
 * so the few declarations this plugin needs are written out below (the ABI of QEMU's
 * include/qemu/qemu-plugin.h, API version 1). Build and use (benches/insn-count.sh does both):
 *
 *   cc -shared -fPIC -O2 -o insn_count.so benches/qemu/insn_count.c
 *   qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin ./insn_count.so PROGRAM ARGS...
 *
 * A translation block's instruction count is added atomically when the block executes (a
 * callback, not QEMU's non-atomic inline add, so concurrent guest threads lose no counts).
 * The figure is a count of executed guest instructions, not a time: emulation says nothing
 * about how fast a real core runs them.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stddef.h>

/* --- from QEMU's include/qemu/qemu-plugin.h (API version 1) --- */
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_cb_flags { QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_CB_R_REGS, QEMU_PLUGIN_CB_RW_REGS };
typedef void (*qemu_plugin_vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, qemu_plugin_vcpu_udata_cb_t cb,
                                          enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);
void qemu_plugin_outs(const char *string);
/* --- end of QEMU's declarations --- */

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

static _Atomic uint64_t executed;

static void on_exec(unsigned int vcpu_index, void *userdata)
{
    (void)vcpu_index;
    atomic_fetch_add_explicit(&executed, (uint64_t)(uintptr_t)userdata, memory_order_relaxed);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    qemu_plugin_register_vcpu_tb_exec_cb(tb, on_exec, QEMU_PLUGIN_CB_NO_REGS, (void *)(uintptr_t)n);
}

static void on_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id;
    (void)userdata;
    char line[64];
    snprintf(line, sizeof line, "qemu-insn-count: %llu\n",
             (unsigned long long)atomic_load(&executed));
    qemu_plugin_outs(line);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                                const qemu_info_t *info, int argc,
                                                                char **argv)
{
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}
