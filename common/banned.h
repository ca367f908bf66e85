/*
 * banned.h - functions weft code must not call (as git does).
 *
 * Include it last in every .c file.  The replacements:
 *   strcpy/strcat/strncpy/strncat -> snprintf or memcpy with explicit lengths
 *   sprintf/vsprintf              -> snprintf/vsnprintf (or struct buf)
 *   strtok                        -> strtok_r or a hand-written scan
 *   atoi/atol/atoll               -> strtoll with end and errno checks
 *   gmtime/localtime/ctime/asctime -> the _r variants
 */
#ifndef WEFT_BANNED_H
#define WEFT_BANNED_H

#define BANNED(func) sorry_##func##_is_a_banned_function

#undef strcpy
#define strcpy(x, y) BANNED(strcpy)
#undef strcat
#define strcat(x, y) BANNED(strcat)
#undef strncpy
#define strncpy(x, y, n) BANNED(strncpy)
#undef strncat
#define strncat(x, y, n) BANNED(strncat)
#undef sprintf
#define sprintf(...) BANNED(sprintf)
#undef vsprintf
#define vsprintf(...) BANNED(vsprintf)
#undef strtok
#define strtok(x, y) BANNED(strtok)
#undef atoi
#define atoi(x) BANNED(atoi)
#undef atol
#define atol(x) BANNED(atol)
#undef atoll
#define atoll(x) BANNED(atoll)
#undef gmtime
#define gmtime(t) BANNED(gmtime)
#undef localtime
#define localtime(t) BANNED(localtime)
#undef ctime
#define ctime(t) BANNED(ctime)
#undef asctime
#define asctime(t) BANNED(asctime)

#endif /* WEFT_BANNED_H */
