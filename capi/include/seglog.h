/*
 * seglog.h: C API of seglog's recorder (libtelemetry's role for C probes).
 *
 * Build with `cargo build --release -p capi` (libseglog.so, soname libseglog.so.0, and
 * libseglog.a), install with `capi/install.sh PREFIX`, then compile with
 * `cc probe.c $(pkg-config --cflags --libs seglog)`.
 * A handle may be used from several threads at once; any number of processes may open the
 * same log directory. Records are appended locally and never block on the network.
 *
 *     seglog_t *log;
 *     if (seglog_open(NULL, NULL, &log) != SEGLOG_OK) {
 *         fprintf(stderr, "seglog: %s\n", seglog_last_error());
 *         return 1;
 *     }
 *     char id[SEGLOG_RECORD_ID_LEN + 1];
 *     int rc = seglog_record(log, "org.example/crash/segfault", 4, buf, len, NULL, id);
 *     if (rc < 0) fprintf(stderr, "seglog: %s\n", seglog_last_error());
 *     seglog_close(log);
 */
#ifndef SEGLOG_H
#define SEGLOG_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* An open log. */
typedef struct seglog seglog_t;

/* Return codes: 0 and positive codes are success, every error is negative (test `rc < 0`). */
enum seglog_status {
    SEGLOG_OK = 0,
    SEGLOG_HELD_BACK = 1,             /* written, but over a rate limit with strategy "spool":
                                         held back from upload; seglog_last_error() says until
                                         when (counted as spooled) */
    SEGLOG_E_INVALID_ARGUMENT = -1,   /* NULL handle/pointer, or a string that is not UTF-8 */
    SEGLOG_E_CLASSIFICATION = -2,     /* not DOMAIN/PROBE/REST, printable, <= 140 bytes */
    SEGLOG_E_SEVERITY = -3,           /* not 1 to 4 */
    SEGLOG_E_EVENT_ID = -4,           /* not 32 hex characters */
    SEGLOG_E_PAYLOAD_TOO_LARGE = -5,  /* larger than log.max_record_size allows */
    SEGLOG_E_RATE_LIMITED = -6,       /* over a rate limit with strategy "drop" (counted) */
    SEGLOG_E_CONFIG = -7,             /* the configuration files or values are invalid */
    SEGLOG_E_IO = -8,                 /* the log or its state files could not be used (for a
                                         shared log this user may not write, the message names
                                         the group to join) */
    SEGLOG_E_NO_SPACE = -9,           /* the disk is full; retry after freeing space */
    SEGLOG_E_INTERNAL = -10           /* a bug in seglog (please report it) */
};

/* Length of a record id in characters (lowercase hex), without the terminating NUL. */
#define SEGLOG_RECORD_ID_LEN 32

/*
 * Opens the log for writing. `dir` (may be NULL) overrides the configured log directory;
 * `config_file` (may be NULL) is applied after /usr/share/defaults/seglog/seglog.toml and
 * /etc/seglog/seglog.toml; SEGLOG_DIR in the environment is honoured. On success stores a
 * handle in *out; free it with seglog_close.
 */
int seglog_open(const char *dir, const char *config_file, seglog_t **out);

/*
 * Appends one record. `classification` and `event_id` (may be NULL) are NUL-terminated;
 * `payload` may be NULL when `payload_len` is 0. When `record_id_out` is not NULL it
 * receives the record id: SEGLOG_RECORD_ID_LEN hex characters and a NUL. Returns SEGLOG_OK,
 * or SEGLOG_HELD_BACK when the record was written but the rate limit holds it back from upload
 * (strategy "spool"; seglog_last_error() then names the release time), or an error (< 0).
 */
int seglog_record(seglog_t *log, const char *classification, int severity, const void *payload,
                  size_t payload_len, const char *event_id, char *record_id_out);

/* Closes the handle (NULL is ignored). Pending counters are written. */
void seglog_close(seglog_t *log);

/* A static description of a return code. */
const char *seglog_strerror(int code);

/*
 * The detailed message of the last error on this thread (naming the field and what to do),
 * the release time after SEGLOG_HELD_BACK, or "" after SEGLOG_OK. Valid until the next seglog call on this thread.
 */
const char *seglog_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* SEGLOG_H */
