/* The compiled path: plain READ/WRITE(10/16) answered straight off the TCMU ring.
 *
 * Optional: tcmu_scst.kernel.fastpath loads it when it was built, and everything works
 * without it (the pure-Python path answers the same commands the same way; both are
 * tested). It exists because CPython's cost per command (an entry parsed into a
 * Command, a CDB checked, a preadv, a response packed: a few microseconds) is most
 * of our CPU per I/O on page-cache hits, where the I/O itself is a memcpy.
 *
 * serve_plain(map, cmdr_off, cmdr_size, pos, head, fd, block_size, blocks,
 *             max_blocks, writes_ok, fua_ok, rwf_flags, max_read_bytes,
 *             reject10, reject16, histogram) -> (new_pos, served, bytes_moved)
 *
 * Serves the entries from ring position `pos` on, in ring order, while each one is a
 * READ or WRITE(10/16) that the caller's plan allows and one preadv2/pwritev2 moves in
 * full; it stops, without touching it, at the first entry that is anything else (a
 * TMR, another opcode, a refused CDB bit, a zero, too long or out-of-range transfer,
 * a short Data-Out buffer, a write the plan does not allow, an I/O that would block,
 * failed or came up short) and at `head`, and returns that entry's position. The
 * Python path then takes that entry and every later one as if this had not run, and
 * gives each its precise answer (an I/O it redoes in full).
 *
 * Each served entry is answered in its own slot: the caller guarantees that no older
 * command is unanswered, so under out-of-order completion the oldest pending slot
 * (the one a response takes, tcmu-abi §2.5) is always the entry's own. The caller
 * publishes cmd_tail = new_pos afterwards (one aligned store, after these bytes) and
 * notifies the kernel.
 *
 * A READ is answered with TCMU_UFLAG_READ_LEN and read_len = the bytes read, which
 * is the whole transfer: never a byte of the data area that was not just read.
 * `histogram[k]` counts served commands whose data buffer rounds up to 1 << k bytes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>

/* struct tcmu_cmd_entry (include/uapi/linux/target_core_user.h) */
#define OP_PAD 0
#define OP_CMD 1
#define OFF_KFLAGS 6
#define OFF_UFLAGS 7
#define OFF_IOV_CNT 8
#define OFF_BIDI_CNT 12
#define OFF_CDB_OFF 24
#define OFF_IOV 48
#define IOVEC_SIZE 16
#define OFF_RSP_STATUS 8
#define OFF_RSP_READ_LEN 12
#define UFLAG_READ_LEN 0x2 /* TCMU_UFLAG_READ_LEN */
#define CDB_FUA 0x08 /* byte 1 of READ/WRITE(10/16) */
#define MAX_IOV 64   /* more is never produced for one command of <= 32 MiB; else: Python */
#define HISTOGRAM_LEN 64

static inline uint32_t load32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline uint32_t big32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline unsigned bucket_of(uint64_t size) {
    /* Python's (size - 1).bit_length(): 1 << it is size rounded up to a power of 2 */
    return size <= 1 ? 0 : 64 - (unsigned)__builtin_clzll(size - 1);
}

static PyObject *serve_plain(PyObject *self, PyObject *args) {
    Py_buffer map, reject10, reject16, histogram;
    unsigned long long cmdr_off, cmdr_size, pos, head, block_size, blocks, max_blocks;
    unsigned long long max_read_bytes;
    int fd, writes_ok, fua_ok, rwf_flags;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*KKKKiKKKppiKy*y*w*", &map, &cmdr_off, &cmdr_size, &pos,
                          &head, &fd, &block_size, &blocks, &max_blocks, &writes_ok, &fua_ok,
                          &rwf_flags, &max_read_bytes, &reject10, &reject16, &histogram))
        return NULL;
    PyObject *ret = NULL;
    if (reject10.len != 10 || reject16.len != 16 ||
        histogram.len != HISTOGRAM_LEN * (Py_ssize_t)sizeof(uint64_t) ||
        cmdr_off + cmdr_size > (unsigned long long)map.len || pos >= cmdr_size ||
        head >= cmdr_size || block_size == 0) {
        PyErr_SetString(PyExc_ValueError, "serve_plain: arguments do not describe a ring");
        goto out;
    }
    unsigned char *base = map.buf;
    const uint64_t map_len = (uint64_t)map.len;
    const uint64_t data_off = cmdr_off + cmdr_size;
    unsigned char *ring = base + cmdr_off;
    uint64_t *counts = histogram.buf;
    long served = 0;
    unsigned long long moved_total = 0;
    struct iovec iov[MAX_IOV];

    while (pos != head) {
        unsigned char *entry = ring + pos;
        const uint32_t len_op = load32(entry);
        const uint64_t length = len_op & ~7u;
        if (length < 8 || pos + length > cmdr_size)
            break; /* corrupt: the Python path says so */
        if ((len_op & 7) == OP_PAD) {
            pos = (pos + length) % cmdr_size;
            continue;
        }
        if ((len_op & 7) != OP_CMD || length < OFF_IOV)
            break;
        const uint32_t iov_cnt = load32(entry + OFF_IOV_CNT);
        if (iov_cnt == 0 || iov_cnt > MAX_IOV || load32(entry + OFF_BIDI_CNT))
            break;
        /* The CDB inside the entry, after its iovecs (absolute offset in the map). */
        const uint64_t cdb_off = load64(entry + OFF_CDB_OFF);
        const uint64_t entry_off = cmdr_off + pos;
        if (OFF_IOV + (uint64_t)IOVEC_SIZE * iov_cnt > length ||
            cdb_off < entry_off + OFF_IOV + (uint64_t)IOVEC_SIZE * iov_cnt)
            break;
        const unsigned char *cdb = base + cdb_off;
        const unsigned char *reject;
        unsigned cdb_len;
        uint64_t lba, count;
        const unsigned char op = cdb_off < entry_off + length ? cdb[0] : 0;
        if (op == 0x28 || op == 0x2A) { /* READ(10), WRITE(10): SBC-4 5.15, 5.40 */
            cdb_len = 10;
            reject = reject10.buf;
        } else if (op == 0x88 || op == 0x8A) { /* READ(16), WRITE(16) */
            cdb_len = 16;
            reject = reject16.buf;
        } else {
            break;
        }
        if (cdb_off + cdb_len > entry_off + length)
            break;
        if (cdb_len == 10) {
            lba = big32(cdb + 2);
            count = ((uint32_t)cdb[7] << 8) | cdb[8];
        } else {
            lba = ((uint64_t)big32(cdb + 2) << 32) | big32(cdb + 6);
            count = big32(cdb + 10);
        }
        const int writing = op & 0x02;
        int refused = 0;
        for (unsigned i = 0; i < cdb_len; i++)
            refused |= cdb[i] & reject[i];
        if (refused)
            break;
        if (writing && !(writes_ok && (fua_ok || !(cdb[1] & CDB_FUA))))
            break; /* read-only, or must be durable before GOOD: a worker's job */
        if (count == 0 || count > max_blocks || lba >= blocks || count > blocks - lba)
            break;
        const uint64_t want = count * block_size;
        if (!writing && want >= max_read_bytes)
            break; /* a large READ: on a worker, copied in parallel with others */
        /* The data area's iovecs (absolute offsets in the map), bounds-checked. */
        uint64_t buffer_len = 0, have = 0;
        int n = 0, bad = 0;
        for (uint32_t i = 0; i < iov_cnt; i++) {
            const unsigned char *vec = entry + OFF_IOV + IOVEC_SIZE * i;
            const uint64_t iov_base = load64(vec), iov_len = load64(vec + 8);
            if (iov_base < data_off || iov_base > map_len || iov_len > map_len - iov_base) {
                bad = 1;
                break;
            }
            buffer_len += iov_len;
            if (have < want && iov_len) {
                const uint64_t take = iov_len < want - have ? iov_len : want - have;
                iov[n].iov_base = base + iov_base;
                iov[n].iov_len = take;
                have += take;
                n++;
            }
        }
        if (bad || have < want)
            break;
        ssize_t moved;
        const off_t offset = (off_t)(lba * block_size);
        Py_BEGIN_ALLOW_THREADS
        if (writing)
            moved = pwritev2(fd, iov, n, offset, rwf_flags);
        else
            moved = preadv2(fd, iov, n, offset, rwf_flags);
        Py_END_ALLOW_THREADS
        if (moved < 0 || (uint64_t)moved != want)
            break; /* would block, failed or short: the Python path redoes it in full */
        /* The response: cmd_id stays; kflags 0, uflags, GOOD, no sense, read_len. */
        entry[OFF_KFLAGS] = 0;
        entry[OFF_UFLAGS] = writing ? 0 : UFLAG_READ_LEN;
        memset(entry + OFF_RSP_STATUS, 0, OFF_RSP_READ_LEN - OFF_RSP_STATUS);
        const uint32_t read_len = writing ? 0 : (uint32_t)want;
        memcpy(entry + OFF_RSP_READ_LEN, &read_len, sizeof read_len);
        counts[bucket_of(buffer_len)]++;
        served++;
        moved_total += want;
        pos = (pos + length) % cmdr_size;
    }
    ret = Py_BuildValue("(KlK)", pos, served, moved_total);
out:
    PyBuffer_Release(&map);
    PyBuffer_Release(&reject10);
    PyBuffer_Release(&reject16);
    PyBuffer_Release(&histogram);
    return ret;
}

static PyMethodDef methods[] = {
    {"serve_plain", serve_plain, METH_VARARGS,
     "Answer the leading plain READ/WRITE(10/16) entries of a TCMU ring in order."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_fastring",
    "Compiled path: plain READ/WRITE(10/16) answered straight off the TCMU ring.", -1,
    methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastring(void) { return PyModule_Create(&module); }
