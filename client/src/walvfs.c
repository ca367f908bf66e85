/*
 * walvfs.c - a SQLite VFS shim that writes a transaction's WAL frames in
 * one system call.
 *
 * SQLite writes each WAL frame as two pwrite()s, its 24-byte header and
 * then its page.  A local commit of libweft changes two pages (the view
 * row's and the queue's), so it made four writes, each paying ext4's
 * per-call cost whatever its size.  The shim holds a transaction's
 * frames back, contiguous in memory, and writes them in one pwrite() when
 * the commit frame's page arrives: one system call per commit.  Bulk
 * transactions (a bootstrap page) are written in runs of up to
 * HOLD_MAX bytes.
 *
 * Invariants:
 * - Only the WAL file is wrapped.  The database, its journal and the
 *   shared-memory index go to the underlying VFS's own methods, untouched.
 * - Bytes are held only while SQLite is writing frames: any other call on
 *   the file (a write elsewhere, read, sync, truncate, size, lock, file
 *   control, close) writes them out first, so every call sees the file as
 *   without the shim.
 * - A commit frame (a header whose "database size after commit" field is
 *   not zero: the documented WAL format) is written out with everything
 *   before it as soon as its page arrives, before SQLite publishes the
 *   frames in the WAL index: readers and checkpointers, in this process
 *   or another, only read committed frames, so they never find a hole,
 *   and a commit that returned is in the operating system's hands (what
 *   synchronous=NORMAL promises).
 * - A crash while frames are held is a crash before they were written:
 *   they belonged to a transaction that had not committed, which SQLite
 *   already recovers from.
 *
 * Two VFS objects are built once (pthread_once) and never change
 * afterwards: one over the default VFS, and one over SQLite's "unix-excl",
 * which locks the database file for this process on first use and then
 * takes no more file locks: its WAL index is in this process's memory,
 * shared by the connections of this process only.  That saves a commit
 * the six fcntl() calls of SQLite's read-mark and writer locks, about a
 * third of a one-set commit.  They are registered without becoming the
 * default, so only stores opened with walvfs_name() use them.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#include "common/banned.h"

/* WAL_FRAME_HDRSIZE in SQLite's wal.c: part of the file format */
#define FRAME_HDR 24
/* bytes held before a run of non-commit frames is written anyway: 16
 * frames of 4 KiB pages, which bounds the memory per store and still makes
 * a bulk load's writes few and large */
#define HOLD_MAX  (64 * 1024)
/* never more in one write: the unix VFSes pass at most 0x1ffff bytes
 * to one pwrite() and report a disk full when a write makes no progress
 * (unixWrite), so a longer write would fail */
#define WRITE_MAX 0x1ffff

struct walfile {
	sqlite3_file base;   /* pMethods: wal_methods */
	sqlite3_file *real;  /* the underlying VFS's file, after us */
	unsigned char *held; /* frames not written yet, contiguous */
	int len, cap;	     /* bytes in held, allocated */
	sqlite3_int64 off;   /* file offset of held[0] */
	bool want_page;	     /* held ends with a frame header */
	bool commit;	     /* that header is a commit frame's */
};

/* the two shims, set once in build(): over the default VFS, and over
 * "unix-excl" (the file locked for this process); pAppData is the VFS
 * each wraps */
static sqlite3_vfs wal_vfs[2];
static bool wal_ok[2];
static pthread_once_t once = PTHREAD_ONCE_INIT;

static sqlite3_vfs *
under(const sqlite3_vfs *vfs)
{
	return vfs->pAppData;
}

/* the held frames written out, if any */
static int
flush_held(struct walfile *f)
{
	int rc;

	if (f->len == 0)
		return SQLITE_OK;
	rc = f->real->pMethods->xWrite(f->real, f->held, f->len, f->off);
	f->len = 0;
	f->want_page = false;
	return rc;
}

/* append to held; false if one write would pass WRITE_MAX or memory is
 * short */
static bool
hold(struct walfile *f, const void *buf, int amt)
{
	if (amt > WRITE_MAX - f->len)
		return false;
	if (f->len + amt > f->cap) {
		int cap = f->len + amt > 2 * f->cap ? f->len + amt : 2 * f->cap;
		unsigned char *h = realloc(f->held, (size_t)cap);

		if (!h)
			return false;
		f->held = h;
		f->cap = cap;
	}
	memcpy(f->held + f->len, buf, (size_t)amt);
	f->len += amt;
	return true;
}

/* does this frame header mark a commit (bytes 4..7: the database size in
 * pages after it, zero on other frames)? */
static bool
commit_hdr(const unsigned char *h)
{
	return (h[4] | h[5] | h[6] | h[7]) != 0;
}

static int
w_close(sqlite3_file *p)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f), rc2 = f->real->pMethods->xClose(f->real);

	free(f->held);
	f->held = NULL;
	return rc != SQLITE_OK ? rc : rc2;
}

static int
w_read(sqlite3_file *p, void *buf, int amt, sqlite3_int64 off)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f);

	return rc ? rc : f->real->pMethods->xRead(f->real, buf, amt, off);
}

static int
w_write(sqlite3_file *p, const void *buf, int amt, sqlite3_int64 off)
{
	struct walfile *f = (struct walfile *)p;
	int rc;

	if (f->len > 0 && off == f->off + f->len) {
		if (f->want_page && amt != FRAME_HDR && hold(f, buf, amt)) {
			f->want_page = false;
			/* a commit goes out whole; a long run goes anyway */
			return f->commit || f->len >= HOLD_MAX ? flush_held(f)
							       : SQLITE_OK;
		}
		if (!f->want_page && amt == FRAME_HDR && hold(f, buf, amt)) {
			f->want_page = true;
			f->commit = commit_hdr(buf);
			return SQLITE_OK;
		}
	}
	rc = flush_held(f);
	if (rc)
		return rc;
	if (amt == FRAME_HDR) { /* perhaps a frame's header: hold it */
		f->off = off;
		if (hold(f, buf, amt)) {
			f->want_page = true;
			f->commit = commit_hdr(buf);
			return SQLITE_OK;
		}
	}
	return f->real->pMethods->xWrite(f->real, buf, amt, off);
}

static int
w_truncate(sqlite3_file *p, sqlite3_int64 size)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f);

	return rc ? rc : f->real->pMethods->xTruncate(f->real, size);
}

static int
w_sync(sqlite3_file *p, int flags)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f);

	return rc ? rc : f->real->pMethods->xSync(f->real, flags);
}

static int
w_size(sqlite3_file *p, sqlite3_int64 *size)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f);

	return rc ? rc : f->real->pMethods->xFileSize(f->real, size);
}

static int
w_lock(sqlite3_file *p, int level)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f);

	return rc ? rc : f->real->pMethods->xLock(f->real, level);
}

static int
w_unlock(sqlite3_file *p, int level)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f);

	return rc ? rc : f->real->pMethods->xUnlock(f->real, level);
}

static int
w_check_reserved(sqlite3_file *p, int *out)
{
	struct walfile *f = (struct walfile *)p;

	return f->real->pMethods->xCheckReservedLock(f->real, out);
}

static int
w_control(sqlite3_file *p, int op, void *arg)
{
	struct walfile *f = (struct walfile *)p;
	int rc = flush_held(f);

	return rc ? rc : f->real->pMethods->xFileControl(f->real, op, arg);
}

static int
w_sector(sqlite3_file *p)
{
	struct walfile *f = (struct walfile *)p;

	return f->real->pMethods->xSectorSize(f->real);
}

static int
w_devchar(sqlite3_file *p)
{
	struct walfile *f = (struct walfile *)p;

	return f->real->pMethods->xDeviceCharacteristics(f->real);
}

/* version 1 methods: SQLite uses no shared memory or mmap on a WAL file */
static const sqlite3_io_methods wal_methods = {
	.iVersion = 1,
	.xClose = w_close,
	.xRead = w_read,
	.xWrite = w_write,
	.xTruncate = w_truncate,
	.xSync = w_sync,
	.xFileSize = w_size,
	.xLock = w_lock,
	.xUnlock = w_unlock,
	.xCheckReservedLock = w_check_reserved,
	.xFileControl = w_control,
	.xSectorSize = w_sector,
	.xDeviceCharacteristics = w_devchar,
};

/* a WAL file is wrapped; any other file is the underlying VFS's, in place */
static int
v_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *p, int flags,
       int *out_flags)
{
	struct walfile *f = (struct walfile *)p;
	int rc;

	if (!(flags & SQLITE_OPEN_WAL))
		return under(vfs)->xOpen(under(vfs), name, p, flags, out_flags);
	memset(f, 0, sizeof(*f));
	f->real = (sqlite3_file *)(f + 1);
	rc = under(vfs)->xOpen(under(vfs), name, f->real, flags, out_flags);
	/* on failure pMethods stays NULL, and SQLite does not close it */
	if (rc == SQLITE_OK && f->real->pMethods)
		f->base.pMethods = &wal_methods;
	else if (f->real->pMethods) /* opened, then failed: close it */
		f->real->pMethods->xClose(f->real);
	return rc;
}

static int
v_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
	return under(vfs)->xDelete(under(vfs), name, sync_dir);
}

static int
v_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
	return under(vfs)->xAccess(under(vfs), name, flags, out);
}

static int
v_fullpath(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
	return under(vfs)->xFullPathname(under(vfs), name, n, out);
}

static void *
v_dlopen(sqlite3_vfs *vfs, const char *name)
{
	return under(vfs)->xDlOpen(under(vfs), name);
}

static void
v_dlerror(sqlite3_vfs *vfs, int n, char *msg)
{
	under(vfs)->xDlError(under(vfs), n, msg);
}

static void (*v_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void)
{
	return under(vfs)->xDlSym(under(vfs), h, sym);
}

static void
v_dlclose(sqlite3_vfs *vfs, void *h)
{
	under(vfs)->xDlClose(under(vfs), h);
}

static int
v_random(sqlite3_vfs *vfs, int n, char *out)
{
	return under(vfs)->xRandomness(under(vfs), n, out);
}

static int
v_sleep(sqlite3_vfs *vfs, int us)
{
	return under(vfs)->xSleep(under(vfs), us);
}

static int
v_time(sqlite3_vfs *vfs, double *out)
{
	return under(vfs)->xCurrentTime(under(vfs), out);
}

static int
v_lasterr(sqlite3_vfs *vfs, int n, char *out)
{
	return under(vfs)->xGetLastError
		       ? under(vfs)->xGetLastError(under(vfs), n, out)
		       : 0;
}

static int
v_time64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
	return under(vfs)->xCurrentTimeInt64(under(vfs), out);
}

/* wal_vfs[i] over the VFS named base_name (NULL: the default) */
static void
build_one(int i, const char *name, const char *base_name)
{
	sqlite3_vfs *d = sqlite3_vfs_find(base_name);

	if (!d || d->iVersion < 2 || !d->xCurrentTimeInt64 ||
	    d->szOsFile > INT32_MAX - (int)sizeof(struct walfile))
		return;
	wal_vfs[i] = (sqlite3_vfs){
		.iVersion = 2,
		.szOsFile = (int)sizeof(struct walfile) + d->szOsFile,
		.mxPathname = d->mxPathname,
		.zName = name,
		.pAppData = d,
		.xOpen = v_open,
		.xDelete = v_delete,
		.xAccess = v_access,
		.xFullPathname = v_fullpath,
		.xDlOpen = v_dlopen,
		.xDlError = v_dlerror,
		.xDlSym = v_dlsym,
		.xDlClose = v_dlclose,
		.xRandomness = v_random,
		.xSleep = v_sleep,
		.xCurrentTime = v_time,
		.xGetLastError = v_lasterr,
		.xCurrentTimeInt64 = v_time64,
	};
	wal_ok[i] = sqlite3_vfs_register(&wal_vfs[i], 0) == SQLITE_OK;
}

static void
build(void)
{
	build_one(0, "weft-wal", NULL);
	build_one(1, "weft-wal-excl", "unix-excl");
}

/* without "unix-excl" (a SQLite built without it) an exclusive store gets
 * the shared shim: as safe, only slower */
const char *
walvfs_name(bool exclusive)
{
	pthread_once(&once, build);
	if (exclusive && wal_ok[1])
		return wal_vfs[1].zName;
	return wal_ok[0] ? wal_vfs[0].zName : NULL;
}
