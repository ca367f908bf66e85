/*
 * pgoutput.h - a bounded, allocation-free decoder for what a logical
 * replication connection carries (Postgres 15, pgoutput proto_version 1):
 * the CopyData envelope (XLogData 'w', primary keepalive 'k') and the
 * pgoutput messages the relay needs (Begin, Commit, Relation, Insert).
 * Every other pgoutput message is recognised and reported as PGO_OTHER.
 *
 * Decoded strings and column values borrow from the input buffer.
 * Thread-safe (no state).  Errors: WEFT_ETRUNCATED (the bytes end inside
 * a field), WEFT_EINVAL (an unknown kind or a malformed field),
 * WEFT_ECOUNT (more columns than PGO_MAX_COLS).
 */
#ifndef WEFT_RELAY_PGOUTPUT_H
#define WEFT_RELAY_PGOUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* PGO_MAX_COLS - columns of a relation the decoder accepts. */
#define PGO_MAX_COLS 64

/* The CopyData envelope of the replication stream. */
struct pgo_copy {
	char kind;	     /* 'w' XLogData, 'k' keepalive */
	uint64_t wal_start;  /* 'w' */
	uint64_t wal_end;    /* 'w' and 'k': the server's WAL end */
	int64_t send_time;   /* microseconds since 2000-01-01 */
	bool reply_now;	     /* 'k': the server asks for a status update */
	const uint8_t *data; /* 'w': the pgoutput message */
	size_t len;
};

/* pgo_copy_decode - one CopyData payload. */
int pgo_copy_decode(const uint8_t *p, size_t n, struct pgo_copy *out);

struct pgo_str {
	const char *p; /* not NUL-terminated */
	uint32_t len;
};

enum pgo_col_kind {
	PGO_COL_NULL = 'n',
	PGO_COL_UNCHANGED = 'u', /* unchanged TOAST value */
	PGO_COL_TEXT = 't',
	PGO_COL_BINARY = 'b',
};

struct pgo_col {
	enum pgo_col_kind kind;
	struct pgo_str value; /* text or binary bytes */
};

enum pgo_kind {
	PGO_BEGIN = 'B',
	PGO_COMMIT = 'C',
	PGO_RELATION = 'R',
	PGO_INSERT = 'I',
	PGO_OTHER = 0, /* origin, type, update, delete, truncate, message */
};

struct pgo_msg {
	enum pgo_kind kind;
	char raw_kind; /* the message byte, for PGO_OTHER */
	/* B: final_lsn (= the commit's LSN), commit_time, xid
	 * C: commit_lsn, end_lsn, commit_time */
	uint64_t final_lsn;
	uint64_t commit_lsn;
	uint64_t end_lsn;
	int64_t commit_time; /* microseconds since 2000-01-01 */
	uint32_t xid;
	/* R and I */
	uint32_t relid;
	/* R */
	struct pgo_str nspace, relname;
	/* R: column names; I: values */
	uint16_t ncols;
	struct pgo_str names[PGO_MAX_COLS];
	struct pgo_col cols[PGO_MAX_COLS];
};

/* pgo_decode - one pgoutput message (the payload of an XLogData). */
int pgo_decode(const uint8_t *p, size_t n, struct pgo_msg *out);

/* PGO_EPOCH_OFFSET_US - Unix time of 2000-01-01, in microseconds. */
#define PGO_EPOCH_OFFSET_US 946684800000000LL

/* pgo_status_update - the standby status update ('r', 34 bytes) that
 * acknowledges flush_lsn; out must hold 34 bytes.  now_us: Unix µs. */
void pgo_status_update(uint8_t out[34], uint64_t write_lsn, uint64_t flush_lsn,
		       int64_t now_us, bool reply);

#endif /* WEFT_RELAY_PGOUTPUT_H */
