/*
 * The harness's stand-ins for libtcmu's variadic log functions
 * (tcmu_{err,warn,info,dbg}_message). Stable Rust cannot define C-variadic
 * functions, so these few live in C: each formats its message and hands it
 * to a sink the Rust side installs (stderr until then).
 */
#include <stdarg.h>
#include <stdio.h>

struct tcmu_device;

typedef void (*hamirror_log_sink)(int level, struct tcmu_device *dev,
                                  const char *func, int line, const char *msg);

static hamirror_log_sink sink;

void hamirror_harness_set_log_sink(hamirror_log_sink s)
{
	sink = s;
}

static void emit(int level, struct tcmu_device *dev, const char *func,
                 int line, const char *fmt, va_list ap)
{
	char msg[4096];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (sink)
		sink(level, dev, func, line, msg);
	else
		fprintf(stderr, "[%d] %s:%d: %s", level, func, line, msg);
}

#define HAMIRROR_LOG_FN(name, level)                                        \
	void name(struct tcmu_device *dev, const char *func, int line,      \
	          const char *fmt, ...)                                     \
	{                                                                   \
		va_list ap;                                                 \
		va_start(ap, fmt);                                          \
		emit(level, dev, func, line, fmt, ap);                      \
		va_end(ap);                                                 \
	}

/* syslog levels, as libtcmu_log.h uses them */
HAMIRROR_LOG_FN(tcmu_crit_message, 2)
HAMIRROR_LOG_FN(tcmu_err_message, 3)
HAMIRROR_LOG_FN(tcmu_warn_message, 4)
HAMIRROR_LOG_FN(tcmu_info_message, 6)
HAMIRROR_LOG_FN(tcmu_dbg_message, 7)
