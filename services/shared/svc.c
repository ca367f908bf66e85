/*
 * svc.c - see svc.h.
 */
#include "services/shared/svc.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/file.h"
#include "common/log.h"

#include "common/banned.h"

int
svc_args(const struct cfg_spec *spec, int argc, char **argv,
	 const char *const *level)
{
	char err[CFG_ERR_MAX];
	enum log_level lvl;
	int rc, argi;

	rc = cfg_parse(spec, argc, (const char *const *)argv, &argi, stdout,
		       err, sizeof(err));
	if (rc == CFG_EXIT)
		return -1;
	if (rc || argi < argc) {
		fprintf(stderr, "%s: %s\n", spec->prog,
			rc ? err : "unexpected argument (see --help)");
		return 1;
	}
	if (log_level_parse(*level, &lvl)) {
		fprintf(stderr, "%s: bad --log-level '%s'\n", spec->prog,
			*level);
		return 1;
	}
	log_set_level(lvl);
	log_set_service(spec->prog);
	return 0;
}

int
svc_auth(const char *name, const char *secret, const char *pubkey_file,
	 struct auth **out)
{
	struct auth_config acfg = { NULL, NULL };
	char why[256];
	char *pubkey = NULL;
	int rc;

	if (pubkey_file &&
	    file_read(pubkey_file, 1 << 20, &pubkey, NULL) != 0) {
		fprintf(stderr, "%s: cannot read '%s'\n", name, pubkey_file);
		return 1;
	}
	acfg.hs256_secret = pubkey ? NULL : secret;
	acfg.rs256_pubkey = pubkey;
	rc = auth_new(out, &acfg, why, sizeof(why));
	free(pubkey);
	if (rc) {
		fprintf(stderr, "%s: %s (--jwt-secret or --jwt-public-key)\n",
			name, why);
		return 1;
	}
	return 0;
}
