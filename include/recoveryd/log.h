/* Structured logs: one JSON object per line on stderr:
 * {"ts":"2026-...Z","level":"info","msg":"...","job":"<id>",<fields>}.
 * Thread-safe; each line is written with a single write(2). */
#ifndef RECOVERYD_LOG_H
#define RECOVERYD_LOG_H

#include <cjson/cJSON.h>

/* LOG_OFF: only as a minimum, nothing is logged (`run` without --verbose). */
enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF };

void log_set_level(enum log_level min);
/* Redirect output (tests); fd 2 by default. */
void log_set_fd(int fd);
/* Log msg with string fields given as key, value pairs ending with NULL.
 * job may be NULL. */
void log_kv(enum log_level lvl, const char *job, const char *msg, ...);
/* Same, fields taken from a JSON object (not consumed; may be NULL). */
void log_json(enum log_level lvl, const char *job, const char *msg, const cJSON *fields);
const char *log_level_name(enum log_level lvl);

#endif
