/*
 * cmds.h - the weft tool's commands that work on a store (cmds.c).  Each
 * takes the arguments after the command's name (argv[0] is the name) and
 * returns an exit code (tools/cli.h).
 */
#ifndef WEFT_TOOLS_CMDS_H
#define WEFT_TOOLS_CMDS_H

int cmd_space(int argc, const char *const *argv);
int cmd_put(int argc, const char *const *argv);
int cmd_set(int argc, const char *const *argv);
int cmd_delete(int argc, const char *const *argv);
int cmd_get(int argc, const char *const *argv);
int cmd_ls(int argc, const char *const *argv);
int cmd_watch(int argc, const char *const *argv);
int cmd_status(int argc, const char *const *argv);
int cmd_bootstrap(int argc, const char *const *argv);
int cmd_sync(int argc, const char *const *argv);
int cmd_undo(int argc, const char *const *argv);

#endif /* WEFT_TOOLS_CMDS_H */
