/* A small C probe for tests/c_api.rs: writes records through seglog.h and prints what
 * happened, one fact per line. */
#include <stdio.h>
#include <string.h>

#include "seglog.h"

static int expect(const char *what, int got, int want) {
    if (got != want) {
        printf("FAIL %s: got %d (%s: %s), want %d\n", what, got, seglog_strerror(got), seglog_last_error(), want);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: %s LOG_DIR [CONFIG_WITH_A_RATE_LIMIT_OF_ONE]\n", argv[0]);
        return 2;
    }
    seglog_t *log = NULL;
    int rc = seglog_open(argv[1], argc == 3 ? argv[2] : NULL, &log);
    if (rc != SEGLOG_OK) {
        printf("FAIL open: %s: %s\n", seglog_strerror(rc), seglog_last_error());
        return 1;
    }
    char id[SEGLOG_RECORD_ID_LEN + 1];
    int failed = 0;
    if (argc == 3) {
        /* record_burst_limit = 1, strategy spool: the second record is held back. */
        failed |= expect("first", seglog_record(log, "org.example/c/spool", 1, "a", 1, NULL, id), SEGLOG_OK);
        failed |= expect("held", seglog_record(log, "org.example/c/spool", 1, "b", 1, NULL, id), SEGLOG_HELD_BACK);
        printf("HELD %s %s\n", id, seglog_last_error());
        seglog_close(log);
        printf(failed ? "FAILED\n" : "DONE\n");
        return failed;
    }

    failed |= expect("hello", seglog_record(log, "org.example/c/hello", 2, "from C", 6, NULL, id), SEGLOG_OK);
    printf("ID %s\n", id);
    const char bin[5] = {'a', 0, 'b', 0, 'c'};
    failed |= expect("binary",
                     seglog_record(log, "org.example/c/binary", 4, bin, sizeof bin,
                                   "5de9de8d5f3c6a7d445d75ba01cc3322", id),
                     SEGLOG_OK);
    printf("ID %s\n", id);
    failed |= expect("empty", seglog_record(log, "org.example/c/empty", 1, NULL, 0, NULL, NULL), SEGLOG_OK);

    failed |= expect("bad class", seglog_record(log, "bad", 1, "x", 1, NULL, id), SEGLOG_E_CLASSIFICATION);
    printf("ERR %s\n", seglog_last_error());
    failed |= expect("bad severity", seglog_record(log, "a/b/c", 7, "x", 1, NULL, id), SEGLOG_E_SEVERITY);
    printf("ERR %s\n", seglog_last_error());
    failed |= expect("bad event id", seglog_record(log, "a/b/c", 1, "x", 1, "XYZ", id), SEGLOG_E_EVENT_ID);
    failed |= expect("null handle", seglog_record(NULL, "a/b/c", 1, "x", 1, NULL, id), SEGLOG_E_INVALID_ARGUMENT);
    failed |= expect("null payload", seglog_record(log, "a/b/c", 1, NULL, 3, NULL, id), SEGLOG_E_INVALID_ARGUMENT);
    failed |= expect("null out", seglog_open(argv[1], NULL, NULL), SEGLOG_E_INVALID_ARGUMENT);
    if (strlen(seglog_strerror(SEGLOG_E_RATE_LIMITED)) == 0) {
        printf("FAIL strerror\n");
        failed = 1;
    }
    seglog_close(log);
    seglog_close(NULL);
    printf(failed ? "FAILED\n" : "DONE\n");
    return failed;
}
