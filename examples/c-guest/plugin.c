/* A GoatKit WASM plugin in C, implementing ABI v1 by hand: no SDK, no libc.
 *
 *   clang --target=wasm32 -O2 -nostdlib -Wl,--no-entry -o c_guest.wasm plugin.c
 *
 * It registers one route and answers `greet` by asking the host for a cache entry through
 * `gk.host_call`, wrapping the host's JSON reply in its own.
 */

typedef unsigned int u32;
typedef unsigned long long u64;

__attribute__((import_module("gk"), import_name("host_call")))
long long host_call(int fn_ptr, int fn_len, int args_ptr, int args_len);

__attribute__((import_module("gk"), import_name("log")))
void host_log(int level, int msg_ptr, int msg_len);

static unsigned char heap[256 * 1024];
static u32 heap_top = 0;

static u32 length(const char *s) { u32 n = 0; while (s[n]) n++; return n; }
static void copy(unsigned char *to, const unsigned char *from, u32 n) { for (u32 i = 0; i < n; i++) to[i] = from[i]; }
static long long pack(const void *ptr, u32 len) { return (long long)(((u64)(u32)ptr << 32) | len); }

/* A bump allocator: the host frees nothing it did not get from here, and plugins are
 * short-lived between calls, so reset when the heap is empty enough. */
__attribute__((export_name("gk_malloc")))
int gk_malloc(int size) {
    u32 aligned = ((u32)size + 7u) & ~7u;
    if (heap_top + aligned > sizeof heap) heap_top = 0;
    if (aligned > sizeof heap) return 0;
    unsigned char *p = heap + heap_top;
    heap_top += aligned;
    return (int)p;
}

static const char REGISTRATION[] =
    "{\"name\":\"c-guest\",\"version\":\"0.1.0\",\"description\":\"A plugin written in C\","
    "\"routes\":[{\"method\":\"GET\",\"path\":\"/api/plugins/c-guest/greet\",\"handler\":\"greet\"}]}";

__attribute__((export_name("gk_register")))
long long gk_register(void) {
    return pack(REGISTRATION, length(REGISTRATION));
}

static int equals(const unsigned char *a, u32 a_len, const char *b) {
    u32 n = length(b);
    if (a_len != n) return 0;
    for (u32 i = 0; i < n; i++) if (a[i] != (unsigned char)b[i]) return 0;
    return 1;
}

__attribute__((export_name("gk_call")))
long long gk_call(int fn_ptr, int fn_len, int args_ptr, int args_len) {
    (void)args_ptr; (void)args_len;
    if (!equals((const unsigned char *)fn_ptr, (u32)fn_len, "greet")) return 0;

    static const char MSG[] = "greeting from C";
    host_log(1, (int)MSG, (int)length(MSG));

    static const char FN[] = "cache_get";
    static const char ARGS[] = "{\"key\":\"greeting\"}";
    long long reply = host_call((int)FN, (int)length(FN), (int)ARGS, (int)length(ARGS));
    if (reply == 0) return 0;
    u32 reply_ptr = (u32)((u64)reply >> 32), reply_len = (u32)reply;

    static const char HEAD[] = "{\"from\":\"c\",\"host_reply\":";
    u32 head_len = length(HEAD), total = head_len + reply_len + 1;
    unsigned char *out = (unsigned char *)gk_malloc((int)total);
    if (!out) return 0;
    copy(out, (const unsigned char *)HEAD, head_len);
    copy(out + head_len, (const unsigned char *)reply_ptr, reply_len);
    out[total - 1] = '}';
    return pack(out, total);
}
