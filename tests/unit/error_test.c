/*
 * error_test.c - the error enum: every code has its own name and text.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

#include <weft/error.h>

#define CODE(name, value, text) WEFT_##name,
static const int all[] = { WEFT_ERRNO_MAP(CODE) };
#undef CODE
#define NALL (sizeof(all) / sizeof(all[0]))

Test(error, ok_is_zero_and_errors_negative)
{
	cr_assert(eq(i64, WEFT_OK, 0));
	for (size_t i = 1; i < NALL; i++)
		cr_assert(lt(i64, all[i], 0), "%s should be negative",
			  weft_errname(all[i]));
}

Test(error, every_code_has_a_distinct_name_and_text)
{
	for (size_t i = 0; i < NALL; i++) {
		cr_assert_str_neq(weft_strerror(all[i]), "unknown error",
				  "code %d has no text", all[i]);
		cr_assert_str_neq(weft_errname(all[i]), "WEFT_E?");
		for (size_t j = 0; j < i; j++) {
			cr_assert(ne(i64, all[i], all[j]));
			cr_assert_str_neq(weft_strerror(all[i]),
					  weft_strerror(all[j]));
		}
	}
}

Test(error, names_match_the_enum)
{
	cr_assert_str_eq(weft_errname(WEFT_ETYPE), "WEFT_ETYPE");
	cr_assert_str_eq(weft_strerror(WEFT_EPERM), "permission denied");
}

Test(error, unknown_codes_are_described_not_null)
{
	cr_assert_str_eq(weft_strerror(-9999), "unknown error");
	cr_assert_str_eq(weft_strerror(42), "unknown error");
	cr_assert_str_eq(weft_errname(-9999), "WEFT_E?");
}
