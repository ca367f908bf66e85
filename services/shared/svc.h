/*
 * svc.h - the start of every weft service's main(): flags and WEFT_*
 * variables, logging, and the token verifier.
 */
#ifndef WEFT_SVC_SVC_H
#define WEFT_SVC_SVC_H

#include "common/config.h"
#include "services/shared/auth.h"

/*
 * svc_args - parse argv and the environment with spec (cfg_parse), refuse
 * stray arguments, then set up logging from *level (the --log-level
 * option's value, read after parsing) under spec->name.  Returns 0 to go
 * on, 1 after printing an error, or -1 when --help was printed (exit 0).
 */
int svc_args(const struct cfg_spec *spec, int argc, char **argv,
	     const char *const *level);

/*
 * svc_auth - the token verifier: RS256 with the PEM public key in
 * pubkey_file when set, else HS256 with secret.  Prints why and returns 1
 * when neither works; 0 with *out set otherwise.
 */
int svc_auth(const char *name, const char *secret, const char *pubkey_file,
	     struct auth **out);

#endif /* WEFT_SVC_SVC_H */
